//! What paying clients saw under crashes (the crash tests' bookkeeping): each receipt, each
//! request sent, and how each failure was answered, so the tests can hold the provider's log
//! against it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::{Client, ClientError};
use tally_core::request::request_hash;
use tally_core::Receipt;
use tally_http::Reason;

use crate::{TestChannel, ECHO_PRICE};

/// What one paying client saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Receipts it got with a response.
    pub receipts: Vec<Receipt>,
    /// Request hashes of every request it ever sent (each body is unique).
    pub sent: HashSet<[u8; 32]>,
    /// Requests answered with a receipt.
    pub ok: usize,
    /// Answers that showed the provider was ahead of the mirror: resynced through
    /// `stale_seq` (a receipt at a seq beyond the mirror's size before the call).
    pub resynced: usize,
    /// Retries answered `already_recorded` (the client mirrored the record).
    pub already_recorded: usize,
    /// The (seq, request hash) of each of those: the log must hold it, once.
    pub lost: Vec<(u64, [u8; 32])>,
    /// Transport failures while the gateway was down or dying.
    pub transport_errors: usize,
    /// `503` answers (`store_unavailable`, `overloaded`): in a cluster, a shard between a
    /// dead owner and its successor (spec/CLUSTER.md §7, §8). Retryable, nothing recorded.
    pub unavailable: usize,
    /// When each receipt arrived and the epoch its response named, in arrival order.
    pub stamps: Vec<Stamp>,
}

/// One receipt's arrival.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// When the response was read.
    pub at: Instant,
    /// The record's index.
    pub index: u64,
    /// `TALLY-EPOCH: <shard>.<epoch>` of the response (spec/CLUSTER.md §6), if present.
    pub epoch: Option<(u32, u64)>,
}

/// Parses a `TALLY-EPOCH` value, `<shard>.<epoch>`.
pub fn parse_epoch(value: &str) -> Option<(u32, u64)> {
    let (shard, epoch) = value.trim().split_once('.')?;
    Some((shard.parse().ok()?, epoch.parse().ok()?))
}

impl Seen {
    /// Adds `other`'s observations.
    pub fn merge(&mut self, other: Seen) {
        self.receipts.extend(other.receipts);
        self.sent.extend(other.sent);
        self.ok += other.ok;
        self.resynced += other.resynced;
        self.already_recorded += other.already_recorded;
        self.lost.extend(other.lost);
        self.transport_errors += other.transport_errors;
        self.unavailable += other.unavailable;
        self.stamps.extend(other.stamps);
    }
}

/// Sends one paid request and files the outcome. `Err` is a transport failure or a `503`
/// (both retryable).
pub async fn call(client: &Client, path: &str, body: &str, seen: &mut Seen) -> Result<(), String> {
    let salt = client
        .request_salt()
        .await
        .expect("bound client has a salt");
    let hash = request_hash(&salt, "POST", path, "", body.as_bytes()).0;
    seen.sent.insert(hash);
    let before = client.mirror_head().await.0;
    match client.post(path).body(body.to_string()).send().await {
        Ok(r) => {
            assert_eq!(r.status, 200, "{body}");
            assert_eq!(r.body, body.as_bytes());
            let receipt = r
                .receipt
                .unwrap_or_else(|| panic!("{body}: a paid call without a receipt"));
            assert_eq!(receipt.outcome.amount, ECHO_PRICE as i128);
            if receipt.outcome.index > before {
                seen.resynced += 1;
            }
            let epoch = r
                .headers
                .get(tally_http::headers::EPOCH)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_epoch);
            seen.stamps.push(Stamp {
                at: Instant::now(),
                index: receipt.outcome.index,
                epoch,
            });
            seen.receipts.push(receipt);
            seen.ok += 1;
            Ok(())
        }
        Err(ClientError::ResponseLost { seq }) => {
            // A lane's seq: checked against the log at the end.
            seen.lost.push((seq, hash));
            seen.already_recorded += 1;
            Ok(())
        }
        Err(ClientError::Http(e)) => {
            seen.transport_errors += 1;
            Err(e)
        }
        Err(ClientError::Refused {
            reason: reason @ (Reason::StoreUnavailable | Reason::Overloaded),
            message,
        }) => {
            // Not recorded (spec/HTTP.md §9): the lane's seq stays, the next call may retry.
            seen.unavailable += 1;
            Err(format!("{}: {message}", reason.code()))
        }
        Err(e) => panic!("{body}: the client could not go on: {e}"),
    }
}

/// Pays until `stop`, `in_flight` requests at once from as many tasks (so on as many lanes);
/// after a transport failure the next rounds move on to new requests (a lane whose lost
/// request was recorded meets `stale_seq` and resyncs).
pub async fn traffic(
    client: Client,
    c: usize,
    in_flight: usize,
    stop: Arc<AtomicBool>,
) -> (Client, Seen) {
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            n += 1;
            let body = format!("client {c} request {n}");
            let client = client.clone();
            round.spawn(async move {
                let mut one = Seen::default();
                let failed = call(&client, "/v1/echo", &body, &mut one).await.is_err();
                (failed, one)
            });
        }
        let mut failures = 0;
        while let Some(joined) = round.join_next().await {
            let (failed, one) = joined.unwrap_or_else(|e| panic!("a request task: {e}"));
            seen.merge(one);
            failures += usize::from(failed);
        }
        if failures > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (client, seen)
}

/// `GET /tally/v1/channels/{id}` at `url`, read with the channel's session key.
pub async fn channel_state(url: &str, ch: &TestChannel) -> tally_http::api::ChannelState {
    let resp = crate::read_get(ch, &format!("{url}/tally/v1/channels/{}", ch.id.to_hex())).await;
    let bytes = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("channel state: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("channel state: {e}"))
}
