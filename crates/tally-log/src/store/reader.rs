//! Reading a channel's stored hashes: the incomplete block and upper levels in memory, tiles
//! and records in sled.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tally_core::hash::{Hash, TreeHasher};
use tally_core::ChannelId;

use super::layout::*;
use crate::error::LogError;
use crate::tile_cache::TileCache;
use crate::tree::{Frontier, HashReader};

/// Levels `0..TILE_HEIGHT` of the incomplete last block of a channel's log.
#[derive(Clone, Debug)]
pub(super) struct Partial {
    /// The block these hashes belong to: `size / 64`.
    pub(super) block: u64,
    /// `levels[l]` lists the stored hashes of level `l` inside the block, in order.
    pub(super) levels: Vec<Vec<Hash>>,
}

impl Partial {
    pub(super) fn new(block: u64) -> Self {
        Partial {
            block,
            levels: vec![Vec::new(); TILE_HEIGHT as usize],
        }
    }

    /// The tile value of a complete block.
    pub(super) fn tile_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TILE_HASHES * 32);
        for level in &self.levels {
            for h in level {
                out.extend_from_slice(&h.0);
            }
        }
        out
    }
}

/// What readers of one channel take from memory: the incomplete block and, once loaded, the
/// levels above the tiles.
#[derive(Debug)]
pub(super) struct Memory {
    pub(super) partial: RwLock<Arc<Partial>>,
    /// `upper[j]` is level `TILE_HEIGHT + j`, in index order; `None` until first needed.
    pub(super) upper: RwLock<Option<Vec<Vec<Hash>>>>,
}

pub(super) type MemoryMap = HashMap<ChannelId, Arc<Memory>>;
pub(super) type Memories = Arc<RwLock<MemoryMap>>;

/// Stored hashes of one channel: tiles from sled (the last one read is kept), the incomplete
/// block and the upper levels from memory, upper levels from sled when not in memory.
pub(super) struct ChannelReader<'a> {
    pub(super) tree: &'a sled::Tree,
    pub(super) channel: &'a ChannelId,
    pub(super) memory: Option<Arc<Memory>>,
    pub(super) tiles: Option<&'a TileCache>,
    pub(super) tile: RefCell<Option<(u64, sled::IVec)>>,
}

impl<'a> ChannelReader<'a> {
    pub(super) fn new(
        tree: &'a sled::Tree,
        channel: &'a ChannelId,
        memory: Option<Arc<Memory>>,
    ) -> Self {
        ChannelReader {
            tree,
            channel,
            memory,
            tiles: None,
            tile: RefCell::new(None),
        }
    }

    /// Reads tiles through `cache`.
    pub(super) fn with_tiles(mut self, cache: &'a TileCache) -> Self {
        self.tiles = Some(cache);
        self
    }

    pub(super) fn corrupt(&self, detail: String) -> LogError {
        LogError::Corrupt {
            channel: *self.channel,
            detail,
        }
    }

    pub(super) fn upper_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        let cached = self.memory.as_ref().and_then(|m| {
            let upper = m.upper.read().ok()?;
            let l = upper.as_ref()?.get((level - TILE_HEIGHT) as usize)?;
            l.get(usize::try_from(index).ok()?).copied()
        });
        if let Some(h) = cached {
            return Ok(h);
        }
        let v = self
            .tree
            .get(upper_key(self.channel, level, index))?
            .ok_or_else(|| {
                self.corrupt(format!(
                    "stored hash at level {level} index {index} is missing"
                ))
            })?;
        let bytes: [u8; 32] = v.as_ref().try_into().map_err(|_| {
            self.corrupt(format!(
                "stored hash at level {level} index {index} is not 32 bytes"
            ))
        })?;
        Ok(Hash(bytes))
    }

    pub(super) fn lower_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        let shift = TILE_HEIGHT - level;
        let block = index >> shift;
        let within = (index - (block << shift)) as usize;
        if let Some(memory) = &self.memory {
            if let Ok(partial) = memory.partial.read() {
                if partial.block == block {
                    return partial.levels[level as usize]
                        .get(within)
                        .copied()
                        .ok_or_else(|| {
                            self.corrupt(format!(
                                "hash at level {level} index {index} is beyond the head"
                            ))
                        });
                }
            }
        }
        let mut cached = self.tile.borrow_mut();
        let tile = match cached.as_ref() {
            Some((b, t)) if *b == block => t.clone(),
            _ => {
                let t = match self.tiles.and_then(|c| c.get(self.channel, block)) {
                    Some(t) => t,
                    None => {
                        let t = self
                            .tree
                            .get(tile_key(self.channel, block))?
                            .ok_or_else(|| self.corrupt(format!("tile {block} is missing")))?;
                        if let Some(c) = self.tiles {
                            c.insert(*self.channel, block, t.clone());
                        }
                        t
                    }
                };
                *cached = Some((block, t.clone()));
                t
            }
        };
        let at = 32 * (tile_offset(level) + within);
        let bytes: [u8; 32] = tile
            .get(at..at + 32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.corrupt(format!("tile {block} is truncated")))?;
        Ok(Hash(bytes))
    }
}

impl HashReader for ChannelReader<'_> {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        if level >= TILE_HEIGHT {
            self.upper_hash(level, index)
        } else {
            self.lower_hash(level, index)
        }
    }
}

/// Recomputes the incomplete last block's hashes from its records.
pub(super) fn load_partial<H: TreeHasher>(
    tree: &sled::Tree,
    hasher: &H,
    channel: &ChannelId,
    size: u64,
) -> Result<Partial, LogError> {
    let block = size / BLOCK;
    let mut partial = Partial::new(block);
    let mut local = Frontier::default();
    for index in block * BLOCK..size {
        let record = read_record(tree, channel, index)?;
        for (level, _, hash) in local.push_record(hasher, &record) {
            partial.levels[level as usize].push(hash);
        }
    }
    Ok(partial)
}

/// Reads the stored hashes of level 6 and above of `channel` that a log of `size` has, in
/// order.
pub(super) fn load_upper(
    tree: &sled::Tree,
    channel: &ChannelId,
    size: u64,
) -> Result<Vec<Vec<Hash>>, LogError> {
    let mut levels = Vec::new();
    let mut level = TILE_HEIGHT;
    while level < 64 && (size >> level) > 0 {
        let count = size >> level;
        let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for item in tree.range(upper_key(channel, level, 0)..upper_key(channel, level, count)) {
            let (k, v) = item?;
            let corrupt = |detail: &str| LogError::Corrupt {
                channel: *channel,
                detail: format!("level {level}: {detail}"),
            };
            let index = k.get(34..).map(be_u64);
            if index != Some(hashes.len() as u64) || k.len() != 42 {
                return Err(corrupt("upper-level hashes are not contiguous"));
            }
            let hash: [u8; 32] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("upper-level hash is not 32 bytes"))?;
            hashes.push(Hash(hash));
        }
        if hashes.len() as u64 != count {
            return Err(LogError::Corrupt {
                channel: *channel,
                detail: format!("level {level} holds {} of {count} hashes", hashes.len()),
            });
        }
        levels.push(hashes);
        level += 1;
    }
    Ok(levels)
}

/// The latest checkpoint of `channel` as `(size, root, bytes)`.
pub(super) fn latest_checkpoint(
    tree: &sled::Tree,
    channel: &ChannelId,
) -> Result<Option<(u64, Hash, Vec<u8>)>, LogError> {
    let lo = checkpoint_key(channel, 0);
    let hi = checkpoint_key(channel, u64::MAX);
    match tree.range(lo..=hi).next_back() {
        Some(item) => {
            let (k, v) = item?;
            let (root, bytes) = split_checkpoint(channel, &v)?;
            Ok(Some((key_index(channel, &k)?, root, bytes)))
        }
        None => Ok(None),
    }
}

/// A stored checkpoint value: the root it commits to, then the caller's bytes.
pub(super) fn split_checkpoint(channel: &ChannelId, v: &[u8]) -> Result<(Hash, Vec<u8>), LogError> {
    let root: [u8; 32] =
        v.get(..32)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| LogError::Corrupt {
                channel: *channel,
                detail: "stored checkpoint shorter than its root".into(),
            })?;
    Ok((Hash(root), v[32..].to_vec()))
}

pub(super) fn read_record(
    tree: &sled::Tree,
    channel: &ChannelId,
    index: u64,
) -> Result<Vec<u8>, LogError> {
    tree.get(entry_key(channel, index))?
        .map(|v| v.to_vec())
        .ok_or_else(|| LogError::Corrupt {
            channel: *channel,
            detail: format!("record {index} is missing"),
        })
}
