//! Checkpoints: a channel log's (size, root, cumulative) signed by the client and cosigned by
//! the provider (spec/PROTOCOL.md §6).
//!
//! Offchain a checkpoint travels as a C2SP signed note (c2sp.org/signed-note and
//! c2sp.org/tlog-checkpoint): the client signs it as a note signature (type 0x01) and the
//! provider adds a timestamped cosignature (c2sp.org/tlog-cosignature, type 0x04). Onchain the
//! same four values are signed as EIP-712 by tally-chain (spec/PROTOCOL.md §8.2).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::hash::{ChannelId, Hash};
use crate::keys::{PublicKey, SecretKey};
use crate::signature::Signature;

/// The key name of the client's note signature.
pub const CLIENT_KEY_NAME: &str = "tally-client";
/// The key name of the provider's cosignature.
pub const PROVIDER_KEY_NAME: &str = "tally-provider";
/// The longest note text accepted, so a hostile note cannot make a parser work hard.
pub const MAX_NOTE_LEN: usize = 8192;

const SIG_TYPE_ED25519: u8 = 0x01;
const SIG_TYPE_COSIGNATURE: u8 = 0x04;
const SIG_PREFIX: &str = "\u{2014} ";

/// The state of a channel's log that a checkpoint commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The channel.
    pub channel_id: ChannelId,
    /// The number of records in the log.
    pub size: u64,
    /// The Merkle root at `size`.
    pub root: Hash,
    /// The cumulative net amount after the last record.
    pub cumulative: u128,
}

impl Checkpoint {
    /// The note origin line: `tally/channel/<hex channel id>`.
    pub fn origin(&self) -> String {
        format!("tally/channel/{}", self.channel_id.to_hex())
    }

    /// The checkpoint body (spec/PROTOCOL.md §6.1): origin, size, base64 root and the
    /// `cumulative` extension line, each ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\ncumulative {}\n",
            self.origin(),
            self.size,
            B64.encode(self.root.0),
            self.cumulative
        )
    }

    /// Parses a checkpoint body, accepting only the exact form [`Checkpoint::body`] writes.
    pub fn parse_body(body: &str) -> Result<Self> {
        let bad = |m: &str| Error::MalformedNote(m.to_string());
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("body must end in a newline"))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [origin, size, root, cumulative] = lines[..] else {
            return Err(bad("body must have exactly four lines"));
        };
        let channel = origin
            .strip_prefix("tally/channel/")
            .ok_or_else(|| bad("origin is not tally/channel/<id>"))?;
        let mut id = [0u8; 32];
        if channel.len() != 64 || channel.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("channel id must be 64 lowercase hex digits"));
        }
        hex::decode_to_slice(channel, &mut id).map_err(|_| bad("channel id is not hex"))?;
        let size = parse_decimal(size).ok_or_else(|| bad("size is not a canonical decimal"))?;
        let size = u64::try_from(size).map_err(|_| bad("size exceeds u64"))?;
        let root_bytes = B64.decode(root).map_err(|_| bad("root is not base64"))?;
        let root: [u8; 32] = root_bytes
            .try_into()
            .map_err(|_| bad("root is not 32 bytes"))?;
        let cumulative = cumulative
            .strip_prefix("cumulative ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("cumulative line is not `cumulative <decimal>`"))?;
        let cp = Checkpoint {
            channel_id: ChannelId(id),
            size,
            root: Hash(root),
            cumulative,
        };
        if cp.body() != body {
            return Err(bad("non-canonical body"));
        }
        Ok(cp)
    }

    /// The client's note signature over the body.
    pub fn sign_client(&self, key: &SecretKey) -> Signature {
        key.sign(self.body().as_bytes())
    }

    /// The provider's cosignature at `timestamp` (seconds since the Unix epoch):
    /// a signature over `cosignature/v1\ntime <timestamp>\n` followed by the body.
    pub fn cosign_provider(&self, key: &SecretKey, timestamp: u64) -> Signature {
        key.sign(&cosigned_message(&self.body(), timestamp))
    }
}

/// A checkpoint with the client's signature and, once the provider has countersigned, its
/// cosignature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What is signed.
    pub checkpoint: Checkpoint,
    /// The client's note signature.
    pub client_signature: Signature,
    /// The provider's cosignature and its timestamp.
    pub provider_cosignature: Option<(u64, Signature)>,
}

impl SignedCheckpoint {
    /// Renders the signed note: body, blank line, then one signature line per key.
    pub fn to_note(&self, client: &PublicKey, provider: &PublicKey) -> String {
        let mut out = self.checkpoint.body();
        out.push('\n');
        let mut blob = key_id(CLIENT_KEY_NAME, SIG_TYPE_ED25519, client).to_vec();
        blob.extend_from_slice(&self.client_signature.0);
        out.push_str(&format!(
            "{SIG_PREFIX}{CLIENT_KEY_NAME} {}\n",
            B64.encode(&blob)
        ));
        if let Some((time, sig)) = &self.provider_cosignature {
            let mut blob = key_id(PROVIDER_KEY_NAME, SIG_TYPE_COSIGNATURE, provider).to_vec();
            blob.extend_from_slice(&time.to_be_bytes());
            blob.extend_from_slice(&sig.0);
            out.push_str(&format!(
                "{SIG_PREFIX}{PROVIDER_KEY_NAME} {}\n",
                B64.encode(&blob)
            ));
        }
        out
    }

    /// Parses a signed note and verifies it: the client's signature is required; the
    /// provider's cosignature is required when `require_provider` is set. Signature lines of
    /// other keys are ignored, as c2sp.org/signed-note prescribes; a line that claims one of
    /// our keys but fails verification is an error.
    pub fn from_note(
        note: &str,
        client: &PublicKey,
        provider: &PublicKey,
        require_provider: bool,
    ) -> Result<Self> {
        let bad = |m: &str| Error::MalformedNote(m.to_string());
        if note.len() > MAX_NOTE_LEN {
            return Err(bad("note too long"));
        }
        let split = note
            .find("\n\n")
            .ok_or_else(|| bad("no blank line after body"))?;
        let body = &note[..split + 1];
        let checkpoint = Checkpoint::parse_body(body)?;
        let sig_text = &note[split + 2..];
        let sig_text = sig_text
            .strip_suffix('\n')
            .ok_or_else(|| bad("signatures must end in a newline"))?;
        let client_id = key_id(CLIENT_KEY_NAME, SIG_TYPE_ED25519, client);
        let provider_id = key_id(PROVIDER_KEY_NAME, SIG_TYPE_COSIGNATURE, provider);
        let mut client_signature = None;
        let mut provider_cosignature = None;
        for line in sig_text.split('\n') {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("signature line must start with an em dash and a space"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| bad("signature line must be `name base64`"))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| bad("signature is not base64"))?;
            if blob.len() < 4 {
                return Err(bad("signature shorter than its key id"));
            }
            let (id, sig) = blob.split_at(4);
            if name == CLIENT_KEY_NAME && id == client_id {
                let sig = Signature(sig.try_into().map_err(|_| bad("bad signature length"))?);
                client.verify(body.as_bytes(), &sig)?;
                client_signature = Some(sig);
            } else if name == PROVIDER_KEY_NAME && id == provider_id {
                if sig.len() != 72 {
                    return Err(bad("cosignature must be 8-byte time and 64-byte signature"));
                }
                let (time, sig) = sig.split_at(8);
                let mut t = [0u8; 8];
                t.copy_from_slice(time);
                let time = u64::from_be_bytes(t);
                let sig = Signature(sig.try_into().map_err(|_| bad("bad signature length"))?);
                provider.verify(&cosigned_message(body, time), &sig)?;
                provider_cosignature = Some((time, sig));
            }
        }
        let client_signature =
            client_signature.ok_or(Error::MissingNoteSignature(CLIENT_KEY_NAME))?;
        if require_provider && provider_cosignature.is_none() {
            return Err(Error::MissingNoteSignature(PROVIDER_KEY_NAME));
        }
        Ok(SignedCheckpoint {
            checkpoint,
            client_signature,
            provider_cosignature,
        })
    }
}

/// The 4-byte key id of c2sp.org/signed-note: `SHA-256(name || "\n" || type || key)[:4]`.
pub fn key_id(name: &str, sig_type: u8, key: &PublicKey) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([sig_type]);
    h.update(key.to_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn cosigned_message(body: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{body}").into_bytes()
}

/// Parses a decimal with no sign, no leading zeros (except "0") and at most 39 digits.
fn parse_decimal(text: &str) -> Option<u128> {
    if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}
