//! The wire format of bus messages: a bincode-encoded envelope sealed with HMAC-SHA256.
//! `docs/wire-format.md` describes it byte by byte.

use bincode::{
    Decode, Encode,
    de::Decoder,
    enc::Encoder,
    error::{DecodeError, EncodeError},
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use stellar_core::{ServerToken, TraceParent};

/// The version of an envelope without trace context (what nodes before traces wrote and read).
pub(crate) const VERSION: u8 = 1;
/// The version of an envelope carrying trace context: version 1 plus the trace id, span id and
/// flags before the tag. Messages sent outside any trace stay version 1, so older nodes still
/// read them.
pub(crate) const VERSION_TRACED: u8 = 2;
/// The largest sealed message the bus sends or accepts (`BusSettings::max_message_bytes` can only
/// lower it).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Bincode's allocation limit while decoding: a length prefix claiming more than the message cap
/// is refused before anything is allocated for it.
const DECODE_LIMIT: usize = MAX_MESSAGE_BYTES;
/// What the signing key is derived with, so the token itself never keys anything on the wire.
const KEY_CONTEXT: &[u8] = b"stellar bus v1 signing key";

type HmacSha256 = Hmac<Sha256>;

/// One message as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) sender: String,
    /// Distinguishes runs of one sender id, so sequence numbers can restart.
    pub(crate) incarnation: u64,
    /// Per-sender, per-incarnation counter starting at 1.
    pub(crate) seq: u64,
    /// The sender's wall clock, in milliseconds since the Unix epoch.
    pub(crate) sent_at_ms: u64,
    pub(crate) message_type: String,
    /// The JSON body.
    pub(crate) body: Vec<u8>,
    /// The sender's trace position: the receiver's work continues that trace.
    pub(crate) trace: Option<TraceParent>,
    /// HMAC-SHA256 over the channel and every field above.
    pub(crate) tag: [u8; 32],
}

impl Encode for Envelope {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.version().encode(encoder)?;
        self.sender.encode(encoder)?;
        self.incarnation.encode(encoder)?;
        self.seq.encode(encoder)?;
        self.sent_at_ms.encode(encoder)?;
        self.message_type.encode(encoder)?;
        self.body.encode(encoder)?;
        if let Some(trace) = &self.trace {
            trace.trace_id.encode(encoder)?;
            trace.span_id.encode(encoder)?;
            trace.flags.encode(encoder)?;
        }
        self.tag.encode(encoder)
    }
}

impl<Context> Decode<Context> for Envelope {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let version = u8::decode(decoder)?;
        if version != VERSION && version != VERSION_TRACED {
            return Err(DecodeError::Other("unknown envelope version"));
        }
        let sender = String::decode(decoder)?;
        let incarnation = u64::decode(decoder)?;
        let seq = u64::decode(decoder)?;
        let sent_at_ms = u64::decode(decoder)?;
        let message_type = String::decode(decoder)?;
        let body = Vec::<u8>::decode(decoder)?;
        let trace = if version == VERSION_TRACED {
            let trace_id = <[u8; 16]>::decode(decoder)?;
            let span_id = <[u8; 8]>::decode(decoder)?;
            let flags = u8::decode(decoder)?;
            let trace = TraceParent::new(trace_id, span_id, flags)
                .ok_or(DecodeError::Other("all-zero trace or span id"))?;
            Some(trace)
        } else {
            None
        };
        let tag = <[u8; 32]>::decode(decoder)?;
        Ok(Self {
            sender,
            incarnation,
            seq,
            sent_at_ms,
            message_type,
            body,
            trace,
            tag,
        })
    }
}

/// Why bytes from the transport were not accepted as an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    Oversized,
    Malformed,
    BadSignature,
}

impl Envelope {
    /// The wire version: [`VERSION_TRACED`] exactly when the envelope carries trace context.
    pub(crate) fn version(&self) -> u8 {
        if self.trace.is_some() {
            VERSION_TRACED
        } else {
            VERSION
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("encoding into a Vec cannot fail")
    }

    /// Decodes and checks the size and version, but not the signature.
    pub(crate) fn decode(bytes: &[u8], max_bytes: usize) -> Result<Self, Rejection> {
        if bytes.len() > max_bytes {
            return Err(Rejection::Oversized);
        }
        let (envelope, read): (Self, usize) =
            bincode::decode_from_slice(bytes, config()).map_err(|err| match err {
                // A length prefix beyond the cap: refused before allocating it.
                bincode::error::DecodeError::LimitExceeded => Rejection::Oversized,
                _ => Rejection::Malformed,
            })?;
        if read != bytes.len() {
            return Err(Rejection::Malformed);
        }
        Ok(envelope)
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Signs with the current key and verifies with the current or an older one (key rotation).
#[derive(Clone)]
pub(crate) struct Sealer {
    /// Keyed MACs, current first; cloned per message so the key schedule runs once.
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Sealer {
    pub(crate) fn new(current: &ServerToken, previous: &[ServerToken]) -> Self {
        let keys = std::iter::once(current)
            .chain(previous)
            .map(derive_key)
            .collect();
        Self { keys }
    }

    pub(crate) fn seal(&self, channel: &str, envelope: &mut Envelope) {
        let mac = self.mac(&self.keys[0], channel, envelope);
        envelope.tag.copy_from_slice(&mac.finalize().into_bytes());
    }

    pub(crate) fn verify(&self, channel: &str, envelope: &Envelope) -> Result<(), Rejection> {
        let valid = self.keys.iter().any(|key| {
            self.mac(key, channel, envelope)
                .verify_slice(&envelope.tag)
                .is_ok()
        });
        if valid {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Signs `bytes` for `context` (e.g. a membership record) with the current key.
    pub(crate) fn sign_bytes(&self, context: &str, bytes: &[u8]) -> [u8; 32] {
        let mut tag = [0; 32];
        tag.copy_from_slice(
            &bytes_mac(&self.keys[0], context, bytes)
                .finalize()
                .into_bytes(),
        );
        tag
    }

    /// Whether `tag` signs `bytes` for `context` with an accepted key.
    pub(crate) fn verify_bytes(&self, context: &str, bytes: &[u8], tag: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|key| bytes_mac(key, context, bytes).verify_slice(tag).is_ok())
    }

    fn mac(&self, key: &HmacSha256, channel: &str, envelope: &Envelope) -> HmacSha256 {
        let mut mac = key.clone();
        // Each variable-length field is length-prefixed, so no two messages share an input.
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(&[envelope.version()]);
        field(channel.as_bytes());
        field(envelope.sender.as_bytes());
        field(&envelope.incarnation.to_be_bytes());
        field(&envelope.seq.to_be_bytes());
        field(&envelope.sent_at_ms.to_be_bytes());
        field(envelope.message_type.as_bytes());
        field(&envelope.body);
        if let Some(trace) = &envelope.trace {
            field(&trace.trace_id);
            field(&trace.span_id);
            field(&[trace.flags]);
        }
        mac
    }
}

fn bytes_mac(key: &HmacSha256, context: &str, bytes: &[u8]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(&(context.len() as u64).to_be_bytes());
    mac.update(context.as_bytes());
    mac.update(bytes);
    mac
}

fn derive_key(token: &ServerToken) -> HmacSha256 {
    let mut kdf = HmacSha256::new_from_slice(token.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    kdf.update(KEY_CONTEXT);
    let key = kdf.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            sender: "node-a".into(),
            incarnation: 7,
            seq: 1,
            sent_at_ms: 1_700_000_000_000,
            message_type: "greeting".into(),
            body: br#"{"hello":"world"}"#.to_vec(),
            trace: None,
            tag: [0; 32],
        }
    }

    fn traced() -> Envelope {
        Envelope {
            trace: TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ..envelope()
        }
    }

    #[test]
    fn trace_context_rides_in_version_2_and_is_signed() {
        let sealer = Sealer::new(&ServerToken::new("token"), &[]);
        let mut sent = traced();
        sealer.seal("c", &mut sent);
        let bytes = sent.encode();
        assert_eq!(bytes[0], VERSION_TRACED);
        let got = Envelope::decode(&bytes, 1 << 20).expect("decodes");
        assert_eq!(got, sent);
        assert_eq!(sealer.verify("c", &got), Ok(()));
        let mut untraced = envelope();
        sealer.seal("c", &mut untraced);
        assert_eq!(
            bytes.len(),
            untraced.encode().len() + 25,
            "version 2 adds the 25 bytes of trace context, nothing else"
        );
        let mut moved = got.clone();
        moved.trace.as_mut().expect("traced").trace_id[0] ^= 1;
        assert_eq!(sealer.verify("c", &moved), Err(Rejection::BadSignature));
        let stripped = Envelope { trace: None, ..got };
        assert_eq!(sealer.verify("c", &stripped), Err(Rejection::BadSignature));
        for cut in 0..bytes.len() {
            assert_eq!(
                Envelope::decode(&bytes[..cut], 1 << 20),
                Err(Rejection::Malformed),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_version_follows_the_trace_and_zero_ids_are_malformed() {
        let sealer = Sealer::new(&ServerToken::new("token"), &[]);
        let mut sealed = traced();
        sealer.seal("c", &mut sealed);
        assert_eq!(sealed.version(), VERSION_TRACED);
        assert_eq!(
            Envelope::decode(&sealed.encode(), 1 << 20).map(|e| e.trace),
            Ok(traced().trace)
        );
        let mut bytes = sealed.encode();
        let body_end = bytes.len() - 32 - 25;
        bytes[body_end..body_end + 16].fill(0);
        assert_eq!(
            Envelope::decode(&bytes, 1 << 20),
            Err(Rejection::Malformed),
            "an all-zero trace id"
        );
    }

    #[test]
    fn unknown_versions_are_malformed() {
        let mut bytes = envelope().encode();
        for version in [0, 3, 255] {
            bytes[0] = version;
            assert_eq!(
                Envelope::decode(&bytes, 1 << 20),
                Err(Rejection::Malformed),
                "version {version}"
            );
        }
    }

    #[test]
    fn sealed_envelopes_round_trip_and_verify() {
        let sealer = Sealer::new(&ServerToken::new("token"), &[]);
        let mut sent = envelope();
        sealer.seal("stellar:bus", &mut sent);
        let bytes = sent.encode();
        let got = Envelope::decode(&bytes, 1 << 20).expect("decodes");
        assert_eq!(got, sent);
        assert_eq!(sealer.verify("stellar:bus", &got), Ok(()));
        assert!(
            !bytes.windows(5).any(|w| w == b"token"),
            "the token is on the wire"
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let sealer = Sealer::new(&ServerToken::new("token"), &[]);
        let mut sent = envelope();
        sealer.seal("stellar:bus", &mut sent);
        assert_eq!(
            sealer.verify("stellar:other", &sent),
            Err(Rejection::BadSignature),
            "channel is signed"
        );
        let tampered = [
            Envelope {
                seq: 2,
                ..sent.clone()
            },
            Envelope {
                sender: "node-b".into(),
                ..sent.clone()
            },
            Envelope {
                sent_at_ms: sent.sent_at_ms + 1,
                ..sent.clone()
            },
            Envelope {
                body: b"{}".to_vec(),
                ..sent.clone()
            },
            Envelope {
                message_type: "other".into(),
                ..sent.clone()
            },
        ];
        for envelope in tampered {
            assert_eq!(
                sealer.verify("stellar:bus", &envelope),
                Err(Rejection::BadSignature),
                "{envelope:?}"
            );
        }
        let other = Sealer::new(&ServerToken::new("other token"), &[]);
        assert_eq!(
            other.verify("stellar:bus", &sent),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_previous_token_still_verifies_during_rotation() {
        let old = Sealer::new(&ServerToken::new("old"), &[]);
        let rolling = Sealer::new(&ServerToken::new("new"), &[ServerToken::new("old")]);
        let mut from_old = envelope();
        old.seal("c", &mut from_old);
        assert_eq!(rolling.verify("c", &from_old), Ok(()));
        let mut from_new = envelope();
        rolling.seal("c", &mut from_new);
        assert_eq!(
            old.verify("c", &from_new),
            Err(Rejection::BadSignature),
            "old nodes reject the new key"
        );
    }

    /// A small message whose body length prefix claims `claimed` bytes.
    fn claiming_body_of(claimed: u64) -> Vec<u8> {
        let mut bytes = vec![VERSION];
        bytes.push(6);
        bytes.extend_from_slice(b"node-a");
        bytes.extend([7, 1]); // incarnation, seq
        bytes.push(252); // sent_at_ms as a u32
        bytes.extend_from_slice(&1_700_000_000_u32.to_le_bytes());
        bytes.push(1);
        bytes.push(b'x'); // message type
        bytes.push(253); // body length as a u64
        bytes.extend_from_slice(&claimed.to_le_bytes());
        bytes.extend_from_slice(&[0; 64]);
        bytes
    }

    #[test]
    fn a_length_beyond_the_message_cap_is_refused_before_allocating_it() {
        // Under the old 64 MiB decode limit bincode allocated the claimed 32 MiB, then failed on
        // the short input as malformed; now the limit refuses the claim itself.
        for claimed in [MAX_MESSAGE_BYTES as u64 + 1, 32 << 20, u64::MAX] {
            assert_eq!(
                Envelope::decode(&claiming_body_of(claimed), MAX_MESSAGE_BYTES),
                Err(Rejection::Oversized),
                "claimed {claimed}"
            );
        }
        assert_eq!(
            Envelope::decode(&claiming_body_of(10), MAX_MESSAGE_BYTES),
            Err(Rejection::Malformed),
            "a small claim the input cannot fill is plain malformed"
        );
    }

    #[test]
    fn garbage_truncated_and_oversized_input_is_rejected_without_panic() {
        let sealer = Sealer::new(&ServerToken::new("token"), &[]);
        let mut sent = envelope();
        sealer.seal("c", &mut sent);
        let bytes = sent.encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                Envelope::decode(&bytes[..cut], 1 << 20),
                Err(Rejection::Malformed),
                "cut at {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Envelope::decode(&trailing, 1 << 20),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            Envelope::decode(&bytes, bytes.len() - 1),
            Err(Rejection::Oversized)
        );
        // A length prefix claiming a huge string must not allocate it.
        let mut huge = vec![VERSION, 253];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Envelope::decode(&huge, 1 << 20), Err(Rejection::Oversized));
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let len = (state % 300) as usize;
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Ok(decoded) = Envelope::decode(&noise, 1 << 20) {
                assert_eq!(sealer.verify("c", &decoded), Err(Rejection::BadSignature));
            }
        }
    }
}
