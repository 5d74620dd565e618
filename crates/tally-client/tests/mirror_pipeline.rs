//! The mirror's pipelined appends: the in-memory root (from the mirror's own frontier) is the
//! store's durable root once synced, at every size, across reopening.

use tally_client::mirror::Mirror;
use tally_core::{Authorization, ChannelId, Hash, LogState, Outcome, Record, SecretKey, Signature};

/// The record after `head`, on lane 0 (whose seq is then the log's size), acknowledging it.
fn record(channel: ChannelId, head: LogState, key: &SecretKey) -> Record {
    let seq = head.size;
    let auth = Authorization {
        version: tally_core::VERSION,
        channel_id: channel,
        lane: 0,
        seq,
        request_hash: Hash([seq as u8; 32]),
        max_amount: 10,
        ack_size: head.size,
        ack_root: head.root,
        ack_cumulative: head.cumulative,
        terms_hash: Hash([1; 32]),
    };
    let sig = auth.sign(key);
    let outcome = Outcome {
        version: tally_core::VERSION,
        channel_id: channel,
        lane: 0,
        seq,
        index: seq,
        authorization_hash: auth.signed_hash(&sig),
        units: tally_core::ONE_CALL,
        amount: 1,
        cumulative: u128::from(seq) + 1,
        response_hash: Hash([2; 32]),
        time_ms: seq,
    };
    Record::new(auth, sig, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_roots_match_the_store_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let channel = ChannelId([3; 32]);
    let key = SecretKey::from_seed(&[8; 32]);
    let mut seq = 0u64;
    // Reopen at sizes that exercise every frontier shape around powers of two.
    for batch in [1u64, 1, 2, 3, 7, 1, 16, 33, 64, 1, 127] {
        let mut m = Mirror::open(dir.path(), channel).unwrap();
        assert_eq!(m.size(), seq);
        assert_eq!(m.cumulative(), u128::from(seq));
        for _ in 0..batch {
            let r = record(channel, m.head(), &key);
            m.append_pipelined(&r, Signature([0; 64])).await.unwrap();
            seq += 1;
            assert_eq!(m.size(), seq);
        }
        let root = m.root();
        m.sync().await.unwrap();
        assert_eq!(m.pending(), 0);
        assert_eq!(m.log().head(&channel).unwrap().root, root);
        assert_eq!(m.root_at(seq).unwrap(), root);
        // A record that does not extend the mirror is refused without queuing anything.
        let before = LogState {
            size: seq - 1,
            root: m.root_at(seq - 1).unwrap(),
            cumulative: u128::from(seq - 1),
        };
        let stale = record(channel, before, &key);
        assert!(m
            .append_pipelined(&stale, Signature([0; 64]))
            .await
            .is_err());
        assert_eq!(m.size(), seq);
        assert_eq!(m.pending(), 0);
    }
}
