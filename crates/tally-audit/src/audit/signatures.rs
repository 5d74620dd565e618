//! The parallel stage: one chunk of record lines decoded canonically, checked on its own
//! (R1–R4, the channel, the charges) and both signatures of every record batch-verified
//! (spec/PROTOCOL.md §4.2: audits are what batches are for). A failed batch is re-checked
//! item by item, strictly, to name every bad signature.

use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::signature::{verify_batch, BatchItem};
use tally_core::{ChannelId, Hash, PublicKey, Record, Signature};
use tally_http::WireRecord;
use tally_log::Blake3Hasher;

use super::charges::{self, TermsInForce};
use super::report::{at, Discrepancy};
use crate::statement::Chunk;

/// What every worker reads.
pub(crate) struct Shared<'a> {
    pub channel: ChannelId,
    pub client: &'a PublicKey,
    pub provider: &'a PublicKey,
    pub terms: Option<&'a TermsInForce>,
}

/// A record that decoded, with its leaf hash (`H(0x00 || record bytes)`).
pub(crate) type Placed = (Record, Hash);

/// A record's two signed messages: (index, record, provider signature, authorization bytes,
/// outcome bytes).
type Signed = (u64, Record, Signature, Vec<u8>, Vec<u8>);

/// One chunk after the parallel stage.
pub(crate) struct Checked {
    /// The chunk's position in the stream.
    pub number: u64,
    /// Index of its first record.
    pub first: u64,
    /// Per record: the decoded record, or `None` if it did not decode.
    pub records: Vec<Option<Placed>>,
    /// What was found wrong, in record order.
    pub found: Vec<Discrepancy>,
    /// The chunk's line buffer, handed back for the next chunk.
    pub spare: Vec<u8>,
}

/// Decodes one line: JSON, hex, canonical bytes (spec/PROTOCOL.md §2.3).
fn decode(line: Result<&[u8], u64>) -> Result<(Record, Signature), String> {
    let line = line.map_err(|n| format!("a line of {n} bytes is not a record line"))?;
    let wire: WireRecord =
        serde_json::from_slice(line).map_err(|e| format!("unreadable line: {e}"))?;
    let record = wire
        .decode()
        .map_err(|e| format!("not a canonical record: {e}"))?;
    Ok((record, wire.provider_signature))
}

/// Decodes and checks one chunk.
pub(crate) fn check_chunk(sh: &Shared<'_>, chunk: Chunk) -> Checked {
    let n = chunk.lines.len();
    let mut records = Vec::with_capacity(n);
    let mut found = Vec::new();
    let mut signed: Vec<Signed> = Vec::with_capacity(n);
    for k in 0..n {
        let index = chunk.first + k as u64;
        let (record, provider_sig) = match decode(chunk.line(k)) {
            Ok(d) => d,
            Err(why) => {
                found.push(at(index, "record", why));
                records.push(None);
                continue;
            }
        };
        if let Err(e) = record.check_consistency() {
            found.push(at(index, "record", e.to_string()));
        }
        if record.authorization.channel_id != sh.channel {
            found.push(at(
                index,
                "record",
                format!(
                    "for channel {}, not the statement's",
                    record.authorization.channel_id.to_hex()
                ),
            ));
        }
        charges::check(sh.terms, index, &record, &mut found);
        records.push(Some((record, Blake3Hasher.leaf(&record.to_bytes()))));
        let (ab, ob) = (record.authorization.to_bytes(), record.outcome.to_bytes());
        signed.push((index, record, provider_sig, ab, ob));
    }
    check_signatures(sh, &signed, &mut found);
    Checked {
        number: chunk.number,
        first: chunk.first,
        records,
        found,
        spare: chunk.buf,
    }
}

/// Batch-verifies both signatures of every record; on failure names each bad one.
fn check_signatures(sh: &Shared<'_>, signed: &[Signed], found: &mut Vec<Discrepancy>) {
    let mut items = Vec::with_capacity(signed.len() * 2);
    for (_, r, psig, ab, ob) in signed {
        items.push(BatchItem {
            key: sh.client,
            message: ab,
            signature: &r.client_signature,
        });
        items.push(BatchItem {
            key: sh.provider,
            message: ob,
            signature: psig,
        });
    }
    if verify_batch(&items).is_ok() {
        return;
    }
    for (k, item) in items.iter().enumerate() {
        if item.key.verify(item.message, item.signature).is_ok() {
            continue;
        }
        let index = signed[k / 2].0;
        found.push(if k % 2 == 0 {
            at(
                index,
                "client_signature",
                "the client's authorization signature does not verify under the session key".into(),
            )
        } else {
            at(
                index,
                "provider_signature",
                "the provider's receipt signature does not verify under the provider key".into(),
            )
        });
    }
    // Keep record order: the strict pass appended after the chunk's other findings.
    found.sort_by_key(|d| d.index);
}
