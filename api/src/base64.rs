//! Base64 as the API server reads it.
//!
//! Go's `base64.StdEncoding` checks `format: byte` and decodes a core
//! Secret's `data`: the standard alphabet, padding required, leftover bits
//! in the last character ignored, `\r` and `\n` skipped. A tenant may write
//! any value the API server accepts, so the types decode exactly that (and
//! admission takes only what every decoder reads alike: [`is_canonical`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// What a value that does not decode was expected to be.
pub const EXPECTED: &str = "standard base64 with padding";

/// The 6-bit value of one character of the standard alphabet.
fn sextet(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes `text` as Go's `base64.StdEncoding.DecodeString` does, telling
/// whether any leftover bits were set. The error names what was expected,
/// never the value.
fn decode_go(text: &str) -> Result<(Vec<u8>, bool), &'static str> {
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    if !bytes.len().is_multiple_of(4) {
        return Err(EXPECTED);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let mut leftover = false;
    let quads = bytes.len() / 4;
    for (i, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return Err(EXPECTED);
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | sextet(c).ok_or(EXPECTED)?;
        }
        n <<= 6 * pad;
        let [_, a, b, c] = n.to_be_bytes();
        match pad {
            0 => out.extend([a, b, c]),
            1 => {
                leftover |= c != 0;
                out.extend([a, b]);
            }
            _ => {
                leftover |= b != 0 || c != 0;
                out.push(a);
            }
        }
    }
    Ok((out, leftover))
}

/// Decodes standard base64 as Go's `base64.StdEncoding.DecodeString` does.
pub fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
    decode_go(text).map(|(bytes, _)| bytes)
}

/// Whether `text` is base64 exactly as an encoder writes it: no line
/// breaks, no leftover bits. Only such values are accepted at admission
/// ([`crate::validation::canonical_base64_rule`]), so that every value
/// means one thing to every decoder.
pub fn is_canonical(text: &str) -> bool {
    !text.contains(['\r', '\n']) && matches!(decode_go(text), Ok((_, false)))
}

/// `serde(deserialize_with)` for a map of base64 values, decoded as Go
/// decodes them ([`decode`]).
pub fn map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, ByteString>>, D::Error> {
    let Some(map) = Option::<BTreeMap<String, String>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    map.into_iter()
        .map(|(k, v)| match decode(&v) {
            Ok(bytes) => Ok((k, ByteString(bytes))),
            Err(expected) => Err(D::Error::custom(format!(
                "the value of key \"{}\" is not {expected}",
                crate::quote::quoted(&k, crate::quote::SHORT)
            ))),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use ::base64::Engine as _;
    use ::base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn go_reads_leftover_bits_and_line_breaks() {
        assert_eq!(decode("QR==").as_deref(), Ok(&b"A"[..]));
        assert_eq!(decode("QUJ=").as_deref(), Ok(&b"AB"[..]));
        assert_eq!(decode("aGVs\nbG8=").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode("aGVs\nbG8=\r\n").as_deref(), Ok(&b"hello"[..]));
        assert_eq!(decode("QQ=\n=").as_deref(), Ok(&b"A"[..]));
        assert_eq!(decode("").as_deref(), Ok(&b""[..]));
        for bad in [
            "dg",
            "d===",
            "dg==dg==",
            "not base64!",
            "QQ=A",
            "QQ",
            "QQ=",
            "a-b_",
            "QQ== ",
        ] {
            assert_eq!(decode(bad), Err(EXPECTED), "{bad}");
        }
    }

    #[test]
    fn canonical_is_what_an_encoder_writes() {
        assert!(is_canonical("QQ=="));
        assert!(!is_canonical("QR=="));
        assert!(!is_canonical("QUJ="));
        assert!(!is_canonical("aGVs\nbG8="));
    }

    proptest! {
        #[test]
        fn every_encoding_decodes_back(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = STANDARD.encode(&bytes);
            prop_assert!(is_canonical(&text));
            prop_assert_eq!(decode(&text), Ok(bytes));
        }

        #[test]
        fn canonical_is_what_a_strict_decoder_takes(text in "[A-Za-z0-9+/=]{0,12}") {
            prop_assert_eq!(is_canonical(&text), STANDARD.decode(&text).is_ok());
        }
    }
}
