//! What must hold after every cluster fault (issue 15, spec/CLUSTER.md §1, §4, §6), checked
//! against the shared database read directly:
//!
//! 1. no (channel, index) holds two different records anywhere: each client's mirror equals
//!    the database's records byte for byte, and every receipt a client holds is in
//!    `tally_records` at its index with the same outcome, signed by the provider;
//! 2. along each channel's records by index, the commit epoch never decreases (a stale
//!    node's commits after a takeover were refused), and each receipt's `TALLY-EPOCH` names
//!    the channel's shard and the epoch its record was committed under;
//! 3. a stale node appended nothing after its shards moved ([`assert_no_stale_appends`]).

use std::collections::HashSet;

use tally_client::Client;
use tally_core::encoding::Canonical;
use tally_core::{Record, SecretKey};

use crate::check::open_mirror;
use crate::cluster::{Cluster, Payer};
use crate::traffic::Seen;
use crate::ECHO_PRICE;

/// What the clients saw in all.
#[derive(Debug, Default)]
pub struct Totals {
    /// Receipts.
    pub receipts: usize,
    /// Records in the database over the test's channels.
    pub records: usize,
    /// 503 answers.
    pub unavailable: usize,
    /// Transport failures.
    pub transport_errors: usize,
    /// Retries answered `already_recorded`.
    pub already_recorded: usize,
}

/// Checks 1 and 2 for every client (each dropped first, so its mirror can be opened).
pub async fn assert_consistent(
    cluster: &Cluster,
    paid: Vec<(Client, Seen)>,
    payers: &[Payer],
) -> Totals {
    let mut totals = Totals::default();
    for ((client, seen), payer) in paid.into_iter().zip(payers) {
        let label = payer.label();
        drop(client);
        totals.records += assert_channel(cluster, &seen, payer, &cluster.key).await;
        totals.receipts += seen.ok;
        totals.unavailable += seen.unavailable;
        totals.transport_errors += seen.transport_errors;
        totals.already_recorded += seen.already_recorded;
        eprintln!(
            "{label}: {} receipts, {} unavailable, {} transport errors",
            seen.ok, seen.unavailable, seen.transport_errors
        );
    }
    totals
}

/// One channel: its mirror against the database, its receipts and their epochs; returns
/// the number of records.
async fn assert_channel(cluster: &Cluster, seen: &Seen, payer: &Payer, key: &SecretKey) -> usize {
    let label = payer.label();
    let rows = cluster.db.records(&payer.ch.id).await;
    let head = cluster.db.head(&payer.ch.id).await;
    assert_eq!(
        head.map_or(0, |h| h.size),
        rows.len() as u64,
        "{label}: the head is not the number of records"
    );
    if let Some(h) = head {
        assert_eq!(h.shard, payer.shard, "{label}: the head's shard");
    }
    let mirror = open_mirror(payer.dir.path(), &payer.ch).await;
    assert_eq!(
        mirror.size(),
        rows.len() as u64,
        "{label}: the mirror and the database hold different sizes"
    );
    let mut requests = HashSet::new();
    let mut last_epoch = 0;
    for (i, row) in rows.iter().enumerate() {
        let i = i as u64;
        assert_eq!(row.idx, i, "{label}: a gap in the database's indexes");
        let ours = mirror
            .record(i)
            .unwrap_or_else(|e| panic!("{label}: mirror record {i}: {e}"));
        assert_eq!(
            ours.to_bytes(),
            row.body,
            "{label}: record {i} differs between the mirror and the database"
        );
        let record = Record::from_bytes(&row.body)
            .unwrap_or_else(|e| panic!("{label}: database record {i}: {e}"));
        assert_eq!(record.outcome.index, i, "{label}: record {i}'s index");
        assert_eq!(
            record.outcome.cumulative,
            ECHO_PRICE * u128::from(i + 1),
            "{label}: record {i}'s cumulative"
        );
        assert!(
            seen.sent.contains(&record.authorization.request_hash.0),
            "{label}: record {i} is for a request this client never sent"
        );
        assert!(
            requests.insert(record.authorization.request_hash.0),
            "{label}: the request of record {i} was charged twice"
        );
        assert!(
            row.epoch >= last_epoch,
            "{label}: record {i} was committed at epoch {} after epoch {last_epoch}",
            row.epoch
        );
        last_epoch = row.epoch;
    }
    let provider = key.public();
    for r in &seen.receipts {
        let i = r.outcome.index;
        let row = rows
            .get(i as usize)
            .unwrap_or_else(|| panic!("{label}: receipt {i} is beyond the database's log"));
        let record = Record::from_bytes(&row.body)
            .unwrap_or_else(|e| panic!("{label}: database record {i}: {e}"));
        assert_eq!(record.outcome, r.outcome, "{label}: receipt {i}");
        assert!(
            record.verify_receipt(&provider, &r.signature).is_ok(),
            "{label}: receipt {i}'s signature"
        );
    }
    for s in &seen.stamps {
        let Some((shard, epoch)) = s.epoch else {
            panic!(
                "{label}: the receipt at {} came without TALLY-EPOCH",
                s.index
            );
        };
        assert_eq!(
            shard, payer.shard,
            "{label}: TALLY-EPOCH's shard at {}",
            s.index
        );
        assert_eq!(
            rows[s.index as usize].epoch, epoch,
            "{label}: TALLY-EPOCH at {} is not the epoch of its commit",
            s.index
        );
    }
    rows.len()
}

/// Check 3: `before` (from [`Cluster::epoch_counts`], taken once the stale node's leases
/// had expired) is unchanged: no record was committed under those leases since.
pub async fn assert_no_stale_appends(cluster: &Cluster, before: &[(u32, u64, u64)]) {
    let leases: Vec<(u32, u64)> = before.iter().map(|&(s, e, _)| (s, e)).collect();
    let after = cluster.epoch_counts(&leases).await;
    assert_eq!(
        before, after,
        "the stale node committed under its old leases after they moved ((shard, epoch, records))"
    );
}
