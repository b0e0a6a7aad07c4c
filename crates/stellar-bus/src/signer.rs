//! Signatures over records that other crates keep in Redis (task records), so that someone who can
//! write to Redis but does not hold the server token cannot forge one.

use stellar_core::ServerToken;

use crate::envelope::Sealer;

/// Signs records with a key derived from the server token and verifies them with the current or
/// the previous token (key rotation). Never shows a key in `Debug`.
#[derive(Debug, Clone)]
pub struct RecordSigner {
    sealer: Sealer,
}

impl RecordSigner {
    /// A signer for `current`, also accepting signatures made with `previous`.
    pub fn new(current: &ServerToken, previous: Option<&ServerToken>) -> Self {
        let previous: Vec<ServerToken> = previous.into_iter().cloned().collect();
        Self {
            sealer: Sealer::new(current, &previous),
        }
    }

    /// The hex signature of `fields` for `context` (e.g. `"task"`). Each field is length-prefixed,
    /// so no two field lists share an input.
    pub fn sign(&self, context: &str, fields: &[&[u8]]) -> String {
        hex(&self.sealer.sign_bytes(context, &framed(fields)))
    }

    /// Whether `signature` (hex) signs `fields` for `context` with an accepted key.
    pub fn verify(&self, context: &str, fields: &[&[u8]], signature: &str) -> bool {
        let Some(tag) = unhex(signature) else {
            return false;
        };
        self.sealer.verify_bytes(context, &framed(fields), &tag)
    }
}

fn framed(fields: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(fields.iter().map(|f| f.len() + 8).sum());
    for field in fields {
        bytes.extend_from_slice(&(field.len() as u64).to_be_bytes());
        bytes.extend_from_slice(field);
    }
    bytes
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of lower- or upper-case hex `text`; `None` if it is not hex.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_the_same_fields_and_an_accepted_token() {
        let (old, new) = (ServerToken::new("old"), ServerToken::new("new"));
        let signer = RecordSigner::new(&old, None);
        let signature = signer.sign("task", &[b"id", b"name"]);
        assert!(signer.verify("task", &[b"id", b"name"], &signature));
        assert!(!signer.verify("task", &[b"idn", b"ame"], &signature));
        assert!(!signer.verify("other", &[b"id", b"name"], &signature));
        assert!(!signer.verify("task", &[b"id", b"name"], "zz"));
        assert!(!RecordSigner::new(&new, None).verify("task", &[b"id", b"name"], &signature));
        assert!(RecordSigner::new(&new, Some(&old)).verify("task", &[b"id", b"name"], &signature));
    }
}
