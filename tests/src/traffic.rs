//! What paying clients saw under crashes (the crash tests' bookkeeping): each receipt, each
//! request sent, and how each failure was answered, so the tests can hold the provider's log
//! against it.

use std::collections::HashSet;

use tally_client::{Client, ClientError};
use tally_core::request::request_hash;
use tally_core::Receipt;

use crate::ECHO_PRICE;

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
    }
}

/// Sends one paid request and files the outcome. `Err` is a transport failure.
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
        Err(e) => panic!("{body}: the client could not go on: {e}"),
    }
}
