//! A short-lived cache over tally-chain's [`Funding`], so the chain is read once per channel
//! per refresh interval rather than once per request. A refusal for lack of funds always
//! re-reads the chain first, so a top-up is seen at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_chain::{ChainError, ChannelFunding, Funding};
use tally_core::ChannelId;

/// Cached funding reads.
pub struct FundingCache {
    source: Arc<dyn Funding>,
    ttl: Duration,
    entries: Mutex<HashMap<ChannelId, (Instant, ChannelFunding)>>,
}

impl FundingCache {
    /// Caches `source` for `ttl`.
    pub fn new(source: Arc<dyn Funding>, ttl: Duration) -> Self {
        FundingCache {
            source,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The channel's funding, from cache if younger than the TTL.
    pub async fn get(&self, channel: &ChannelId) -> Result<ChannelFunding, ChainError> {
        let cached = self.entries.lock().ok().and_then(|m| {
            m.get(channel)
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, f)| *f)
        });
        match cached {
            Some(f) => Ok(f),
            None => self.refresh(channel).await,
        }
    }

    /// Reads the chain now and caches the answer.
    pub async fn refresh(&self, channel: &ChannelId) -> Result<ChannelFunding, ChainError> {
        let f = self.source.funding(channel).await?;
        if let Ok(mut m) = self.entries.lock() {
            m.insert(*channel, (Instant::now(), f));
        }
        Ok(f)
    }
}
