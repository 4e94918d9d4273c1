//! Standard Webhooks signing: `whsec_` secrets and the `webhook-signature` header.
//!
//! A secret is `whsec_` followed by the base64 of its key bytes. The signature of one
//! attempt is `v1,` + base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")).
//! During a rotation the header carries one signature per valid secret, separated by
//! spaces; a receiver accepts the request when any of them verifies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key bytes of a generated secret.
const GENERATED_BYTES: usize = 32;
/// The fewest and most key bytes a secret given by a user may have.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A webhook signing secret: its text (`whsec_…`) and its key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASKED)
    }
}

/// How a secret is shown anywhere but in the answer that created it.
pub const MASKED: &str = "whsec_********";

impl SigningSecret {
    /// Reads a secret given by a user: `whsec_` and the base64 of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<SigningSecret, String> {
        let Some(b64) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!("must start with {SECRET_PREFIX}"));
        };
        let key = STANDARD
            .decode(b64)
            .map_err(|e| format!("must be {SECRET_PREFIX} followed by base64: {e}"))?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "must hold {} to {} bytes of key (this one holds {})",
                KEY_BYTES.start(),
                KEY_BYTES.end(),
                key.len()
            ));
        }
        Ok(SigningSecret {
            text: text.to_string(),
            key,
        })
    }

    /// A new random secret of 32 bytes.
    pub fn generate() -> SigningSecret {
        let mut key = vec![0u8; GENERATED_BYTES];
        rand::fill(&mut key[..]);
        SigningSecret {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// The secret as the user writes it (`whsec_…`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature of one attempt: `v1,` + base64 of the HMAC-SHA256 of
    /// `<msg_id>.<timestamp>.<body>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            // HMAC takes a key of any length; parse and generate never make an empty one.
            Err(_) => return String::new(),
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header for `secrets` (one signature each, space-separated).
pub fn signature_header(
    secrets: &[&SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specs_example() {
        // The example of the Standard Webhooks specification.
        let secret =
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_with_a_reason() {
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect_err("no prefix")
            .contains("whsec_"));
        assert!(SigningSecret::parse("whsec_???")
            .expect_err("not base64")
            .contains("base64"));
        assert!(SigningSecret::parse("whsec_c2hvcnQ=")
            .expect_err("short")
            .contains("24 to 64 bytes"));
    }

    #[test]
    fn generated_secrets_differ_and_read_back() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        assert_ne!(a, b);
        assert_eq!(SigningSecret::parse(a.text()).expect("reads back"), a);
        assert_eq!(format!("{a:?}"), MASKED);
    }

    #[test]
    fn one_signature_per_secret() {
        let a = SigningSecret::generate();
        let b = SigningSecret::generate();
        let header = signature_header(&[&a, &b], "id", 5, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [a.sign("id", 5, b"{}"), b.sign("id", 5, b"{}")]);
        assert_ne!(parts[0], parts[1]);
    }
}
