//! A bounded in-memory cache of hash tiles.
//!
//! Tiles are 64 bytes per record against 400 or more for the records, so a budget that holds
//! most of them keeps proof generation off the disk however large the records grow, and
//! sled's own page cache is left to the records. Eviction is first in, first out: O(1), and
//! with random proof requests as good as any policy.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tally_core::ChannelId;

/// Tiles by (channel, block), within a byte budget.
pub(crate) struct TileCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tiles: HashMap<(ChannelId, u64), sled::IVec>,
    /// Keys in insertion order, each once.
    order: VecDeque<(ChannelId, u64)>,
    bytes: usize,
}

impl TileCache {
    /// A cache holding at most `budget` bytes of tiles (0 disables it).
    pub(crate) fn new(budget: usize) -> Self {
        TileCache {
            budget,
            inner: Mutex::default(),
        }
    }

    /// The cached tile, if any.
    pub(crate) fn get(&self, channel: &ChannelId, block: u64) -> Option<sled::IVec> {
        let inner = self.inner.lock().ok()?;
        inner.tiles.get(&(*channel, block)).cloned()
    }

    /// Caches a tile, evicting others to stay within the budget.
    pub(crate) fn insert(&self, channel: ChannelId, block: u64, tile: sled::IVec) {
        if tile.len() > self.budget {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = (channel, block);
        if inner.tiles.contains_key(&key) {
            // Tiles never change once written; two readers may have fetched the same one.
            return;
        }
        while inner.bytes + tile.len() > self.budget {
            let Some(victim) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.tiles.remove(&victim) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += tile.len();
        inner.tiles.insert(key, tile);
        inner.order.push_back(key);
    }
}
