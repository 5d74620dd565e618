//! A short-lived cache over tally-chain's [`Funding`], so the chain is read once per channel
//! per refresh interval rather than once per request. A refusal for lack of funds always
//! re-reads the chain first, so a top-up is seen at once.
//!
//! Channel ids are public and anyone can name one, so the cache also guards the chain node
//! from strangers: "no such channel" answers are remembered for a while, reads of channels
//! the cache does not hold are rate-limited (a token bucket), and the cache itself holds a
//! bounded number of entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_chain::{ChainError, ChannelFunding, Funding};
use tally_core::ChannelId;
use tally_http::Reason;

use crate::bucket::Bucket;
use crate::errors::GatewayError;

/// How long "no such channel" is believed.
const UNKNOWN_TTL: Duration = Duration::from_secs(30);
/// Most entries held; past it, expired entries go first, then arbitrary ones.
const MAX_ENTRIES: usize = 100_000;
/// Reads of channels not in the cache allowed per second, with a burst of as many.
const COLD_READS_PER_SECOND: f64 = 20.0;

/// A cached read: the funding, or `None` for "no such channel".
type Entry = Option<ChannelFunding>;

/// Cached funding reads.
pub struct FundingCache {
    source: Arc<dyn Funding>,
    ttl: Duration,
    entries: Mutex<HashMap<ChannelId, (Instant, Entry)>>,
    cold: Mutex<Bucket>,
    /// Counts reads sent to the source (for `/metrics`).
    reads: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// A chain failure as a client sees it: the reason only. The detail (which may hold the
/// node's URL, and an API key in it) goes to the server's log, redacted, never into a
/// response (spec/HTTP.md §8).
pub fn chain_error(e: ChainError) -> GatewayError {
    match e {
        ChainError::UnknownChannel(id) => GatewayError::new(
            Reason::UnknownChannel,
            format!("channel {id} does not exist onchain"),
        ),
        other => {
            tracing::warn!(
                error = %crate::redact::redact_text(&other.to_string()),
                "chain read failed"
            );
            GatewayError::new(
                Reason::ChainUnavailable,
                "the chain could not be read; retry shortly",
            )
        }
    }
}

impl FundingCache {
    /// Caches `source` for `ttl`.
    pub fn new(source: Arc<dyn Funding>, ttl: Duration) -> Self {
        FundingCache {
            source,
            ttl,
            entries: Mutex::new(HashMap::new()),
            cold: Mutex::new(Bucket::new(COLD_READS_PER_SECOND, COLD_READS_PER_SECOND)),
            reads: None,
        }
    }

    /// Counts every read sent to the source in `counter`.
    pub fn counting(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.reads = Some(counter);
        self
    }

    fn cached(&self, channel: &ChannelId) -> Option<(Instant, Entry)> {
        self.entries.lock().ok()?.get(channel).copied()
    }

    /// The funding last read for the channel, whatever its age, without reading the chain:
    /// for views (the console) that must not spend chain reads or the cold-read bucket.
    pub fn peek(&self, channel: &ChannelId) -> Option<ChannelFunding> {
        self.cached(channel).and_then(|(_, f)| f)
    }

    /// Drops what the cache holds for `channel`, so the next read asks the chain: after this
    /// gateway's relay opened or topped it up (spec/HTTP.md §12), a cached "no such channel"
    /// or an old deposit must not outlive the transaction.
    pub fn forget(&self, channel: &ChannelId) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(channel);
        }
    }

    /// The channel's funding, from cache if younger than the TTL.
    pub async fn get(&self, channel: &ChannelId) -> Result<ChannelFunding, GatewayError> {
        match self.cached(channel) {
            Some((at, Some(f))) if at.elapsed() < self.ttl => Ok(f),
            _ => self.refresh(channel).await,
        }
    }

    /// Reads the chain now and caches the answer. A channel recently found not to exist is
    /// answered from memory; one the cache has never seen costs a token of the cold-read
    /// bucket, and none left means `chain_unavailable` without a read.
    pub async fn refresh(&self, channel: &ChannelId) -> Result<ChannelFunding, GatewayError> {
        match self.cached(channel) {
            Some((at, None)) if at.elapsed() < UNKNOWN_TTL => {
                return Err(chain_error(ChainError::UnknownChannel(*channel)));
            }
            // Only channels known to exist skip the bucket: an id found unknown long ago is
            // as cold as a new one.
            Some((_, Some(_))) => {}
            _ => {
                let allowed = self.cold.lock().map(|mut b| b.take().is_ok());
                if !allowed.unwrap_or(false) {
                    return Err(GatewayError::new(
                        Reason::ChainUnavailable,
                        "too many reads of channels this gateway does not know; retry shortly",
                    ));
                }
            }
        }
        if let Some(counter) = &self.reads {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let read = self.source.funding(channel).await;
        let entry = match &read {
            Ok(f) => Some(Some(*f)),
            Err(ChainError::UnknownChannel(_)) => Some(None),
            Err(_) => None,
        };
        if let Some(entry) = entry {
            self.insert(*channel, entry);
        }
        read.map_err(chain_error)
    }

    fn insert(&self, channel: ChannelId, entry: Entry) {
        let Ok(mut m) = self.entries.lock() else {
            return;
        };
        if m.len() >= MAX_ENTRIES && !m.contains_key(&channel) {
            let ttl = self.ttl.max(UNKNOWN_TTL);
            m.retain(|_, (at, _)| at.elapsed() < ttl);
            if m.len() >= MAX_ENTRIES {
                let drop: Vec<ChannelId> = m.keys().take(MAX_ENTRIES / 8).copied().collect();
                for id in drop {
                    m.remove(&id);
                }
            }
        }
        m.insert(channel, (Instant::now(), entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tally_chain::BoxFuture;

    /// Knows no channel; counts reads.
    #[derive(Default)]
    struct Empty(AtomicUsize);

    impl Funding for Empty {
        fn funding<'a>(
            &'a self,
            channel: &'a ChannelId,
        ) -> BoxFuture<'a, Result<ChannelFunding, ChainError>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            let id = *channel;
            Box::pin(async move { Err(ChainError::UnknownChannel(id)) })
        }
    }

    #[tokio::test]
    async fn strangers_cost_bounded_chain_reads() {
        let source = Arc::new(Empty::default());
        let cache = FundingCache::new(source.clone(), Duration::from_secs(2));
        // The same unknown id, again and again: one read.
        for _ in 0..50 {
            let e = cache.refresh(&ChannelId([1; 32])).await.unwrap_err();
            assert_eq!(e.reason.code(), "unknown_channel");
        }
        assert_eq!(source.0.load(Ordering::Relaxed), 1);
        // 200 fresh random ids at once: at most the bucket's burst reaches the node.
        let mut busy = 0;
        for i in 0..200u32 {
            let mut id = [2u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            if cache
                .refresh(&ChannelId(id))
                .await
                .unwrap_err()
                .reason
                .code()
                == "chain_unavailable"
            {
                busy += 1;
            }
        }
        let reads = source.0.load(Ordering::Relaxed);
        assert!(
            reads <= 1 + COLD_READS_PER_SECOND as usize + 2,
            "{reads} reads"
        );
        assert!(busy >= 170, "{busy} refused without a read");
    }
}
