//! Checks of a provider's log that several end-to-end tests share: the log obeys R1–R8
//! (spec/PROTOCOL.md §5.3, with [`tally_core::Sequence`] for R5, R7 and R8), no (lane, seq)
//! and no request is charged twice, and a client's mirror holds the same bytes.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tally_client::mirror::Mirror;
use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::{ChannelId, PublicKey, Record, Sequence};
use tally_log::{Blake3Hasher, LogStore, MemoryTree};

use crate::TestChannel;

/// Reads `channel`'s whole log from `store` and checks it record by record: each record is
/// valid on its own under `session` (R1–R4, R6), takes its place after the previous ones (R5,
/// R7, R8 through [`Sequence`]: per-lane seqs strict in log order, acknowledgements real and
/// never backwards), and no (lane, seq) or request hash appears twice. Returns the records.
pub fn checked_log(store: &LogStore, channel: &ChannelId, session: &PublicKey) -> Vec<Record> {
    let size = store.head(channel).map_or(0, |h| h.size);
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut seq = Sequence::new(Blake3Hasher.empty());
    let mut lane_seqs = HashSet::new();
    let mut requests = HashSet::new();
    let mut records = Vec::new();
    for i in 0..size {
        let bytes = store
            .record(channel, i)
            .unwrap_or_else(|e| panic!("record {i}: {e}"));
        let record = Record::from_bytes(&bytes).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(record.to_bytes(), bytes, "record {i} is not canonical");
        if let Err(e) = record.verify(session) {
            panic!("record {i} is not valid on its own: {e}");
        }
        if let Err(e) = seq.check_next(&record) {
            panic!("record {i} breaks the log's order: {e}");
        }
        let a = &record.authorization;
        assert!(
            lane_seqs.insert((a.lane, a.seq)),
            "lane {} seq {} recorded twice (record {i})",
            a.lane,
            a.seq
        );
        assert!(
            requests.insert(a.request_hash.0),
            "the request of record {i} was charged twice"
        );
        tree.push(&bytes);
        seq.push(&record, tree.root());
        records.push(record);
    }
    if let Some(head) = store.head(channel) {
        assert_eq!(tree.root(), head.root, "the log's root is not its records'");
    }
    records
}

/// Opens the mirror of `ch` in `dir` once the client that held it is gone (its sled files are
/// released when the last handle drops), retrying for up to 5 s.
pub async fn open_mirror(dir: &Path, ch: &TestChannel) -> Mirror {
    let mut last = String::new();
    for _ in 0..100 {
        match Mirror::open(dir, ch.id) {
            Ok(m) => return m,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("reopening a mirror: {last}")
}

/// The mirror of `ch` in `dir` (its client dropped) holds exactly the bytes of the provider's
/// log, in index order, each with the provider's signature it re-derives.
pub async fn assert_mirror_is_log(dir: &Path, ch: &TestChannel, store: &LogStore) {
    let mirror = open_mirror(dir, ch).await;
    let head = store
        .head(&ch.id)
        .map_or((0, Blake3Hasher.empty()), |h| (h.size, h.root));
    assert_eq!((mirror.size(), mirror.root()), head, "mirror and log heads");
    for i in 0..head.0 {
        let theirs = store
            .record(&ch.id, i)
            .unwrap_or_else(|e| panic!("record {i}: {e}"));
        let ours = mirror
            .record(i)
            .unwrap_or_else(|e| panic!("mirror record {i}: {e}"));
        assert_eq!(ours.to_bytes(), theirs, "record {i} differs");
        assert_eq!(ours.outcome.index, i, "mirror out of index order at {i}");
    }
}

/// The checkpoint body of a stored (cosigned) checkpoint document.
pub fn stored_checkpoint(bytes: &[u8]) -> Option<tally_core::Checkpoint> {
    let wire: tally_http::WireCheckpoint = serde_json::from_slice(bytes).ok()?;
    let end = wire.note.find("\n\n")? + 1;
    tally_core::Checkpoint::parse_body(&wire.note[..end]).ok()
}
