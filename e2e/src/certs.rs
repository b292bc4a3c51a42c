//! Certificates for one cluster: a CA, the API server's serving certificate,
//! client certificates for any identity, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::HarnessError;

/// A PEM certificate and its PEM private key.
pub struct Pair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// A cluster's certificate authority; it signs the serving certificate and
/// every client certificate of that cluster, and nothing else's.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM (what clients trust, what the API server
    /// checks client certificates against).
    pub cert_pem: String,
}

fn cert_err(e: rcgen::Error) -> HarnessError {
    HarnessError::Certificate(e.to_string())
}

impl Authority {
    /// A fresh CA named after the cluster.
    pub fn new(cluster: &str) -> Result<Self, HarnessError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("syncsecret-e2e {cluster} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The API server's serving certificate for 127.0.0.1 and localhost.
    pub fn serving(&self) -> Result<Pair, HarnessError> {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: Kubernetes reads the user from the common name
    /// and the group from the organisation (rcgen writes at most one; a
    /// service account token carries more, if a test needs them).
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<Pair, HarnessError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Pair, HarnessError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A key pair for signing service-account tokens: (private PEM, public PEM).
pub fn service_account_key() -> Result<(String, String), HarnessError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
