//! TLS certificates inside a SyncSecret: when `tls.crt` of a
//! `kubernetes.io/tls` payload expires. The first PEM certificate is read
//! with x509-parser; a malformed one is reported, never fatal (the payload
//! is the tenant's and is synced as it is).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use syncsecret_api::payload::Payload;

/// Condition type set while a certificate expires within the window.
pub const CONDITION_EXPIRING: &str = "CertificateExpiring";
/// Condition type set once a certificate has expired (or cannot be read).
pub const CONDITION_EXPIRED: &str = "CertificateExpired";

/// Where a certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertState {
    /// Valid beyond the window.
    Valid,
    /// Expires within the window.
    Expiring,
    /// Past notAfter.
    Expired,
}

impl CertState {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
        }
    }
}

/// What the first certificate of `tls.crt` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// notAfter, seconds since the epoch.
    pub not_after: i64,
    /// Against now and the window.
    pub state: CertState,
}

/// Reads `tls.crt` of a `kubernetes.io/tls` payload. `None` for other types
/// or without `tls.crt`; `Some(Err(why))` for a malformed certificate.
pub fn inspect(payload: &Payload, now: i64, window_secs: i64) -> Option<Result<CertInfo, String>> {
    Some(judge(read_not_after(payload).as_ref()?, now, window_secs))
}

/// The notAfter of `tls.crt` in a `kubernetes.io/tls` payload (seconds
/// since the epoch), read once when a copy is cached; [`judge`] places it
/// against the time of each reconcile.
pub fn read_not_after(payload: &Payload) -> Option<Result<i64, String>> {
    if payload.type_ != "kubernetes.io/tls" {
        return None;
    }
    let pem = payload.data.get("tls.crt")?;
    Some(parse_not_after(&pem.0))
}

/// Where a notAfter from [`read_not_after`] stands at `now`.
pub fn judge(
    not_after: &Result<i64, String>,
    now: i64,
    window_secs: i64,
) -> Result<CertInfo, String> {
    let not_after = *not_after.as_ref().map_err(Clone::clone)?;
    Ok(CertInfo {
        not_after,
        state: if not_after <= now {
            CertState::Expired
        } else if not_after - now <= window_secs {
            CertState::Expiring
        } else {
            CertState::Valid
        },
    })
}

fn parse_not_after(pem: &[u8]) -> Result<i64, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("tls.crt holds no readable X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// The condition a certificate adds to the status, if any: Expiring or
/// Expired (True, with notAfter), or Expired Unknown for a malformed one.
pub fn condition(info: &Result<CertInfo, String>, generation: Option<i64>) -> Option<Condition> {
    let (type_, status, reason, message) = match info {
        Ok(CertInfo {
            state: CertState::Valid,
            ..
        }) => return None,
        Ok(CertInfo {
            not_after,
            state: CertState::Expiring,
        }) => (
            CONDITION_EXPIRING,
            "True",
            "Expiring",
            format!("tls.crt expires at {} (notAfter)", rfc3339(*not_after)),
        ),
        Ok(CertInfo {
            not_after,
            state: CertState::Expired,
        }) => (
            CONDITION_EXPIRED,
            "True",
            "Expired",
            format!("tls.crt expired at {} (notAfter)", rfc3339(*not_after)),
        ),
        Err(why) => (CONDITION_EXPIRED, "Unknown", "Malformed", why.clone()),
    };
    Some(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(crt: &[u8]) -> Payload {
        Payload {
            type_: "kubernetes.io/tls".into(),
            data: [("tls.crt".to_owned(), k8s_openapi::ByteString(crt.to_vec()))].into(),
            immutable: false,
        }
    }

    #[test]
    fn other_types_and_missing_keys_are_not_inspected() {
        let mut p = tls(b"x");
        p.type_ = "Opaque".into();
        assert_eq!(inspect(&p, 0, 0), None);
        let mut p = tls(b"x");
        p.data.clear();
        assert_eq!(inspect(&p, 0, 0), None);
    }

    #[test]
    fn malformed_is_reported_not_fatal() {
        let r = inspect(
            &tls(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"),
            0,
            0,
        )
        .unwrap();
        let why = r.clone().unwrap_err();
        assert!(why.contains("tls.crt"), "{why}");
        let c = condition(&r, Some(1)).unwrap();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (CONDITION_EXPIRED, "Unknown", "Malformed")
        );
    }

    #[test]
    fn states_follow_not_after_and_the_window() {
        let info = |na: i64, now: i64| CertInfo {
            not_after: na,
            state: if na <= now {
                CertState::Expired
            } else if na - now <= 100 {
                CertState::Expiring
            } else {
                CertState::Valid
            },
        };
        assert_eq!(condition(&Ok(info(1000, 0)), None), None);
        let c = condition(&Ok(info(50, 0)), None).unwrap();
        assert_eq!(c.type_, CONDITION_EXPIRING);
        assert!(c.message.contains("1970-01-01T00:00:50Z"), "{}", c.message);
        assert_eq!(
            condition(&Ok(info(0, 10)), None).unwrap().type_,
            CONDITION_EXPIRED
        );
    }
}
