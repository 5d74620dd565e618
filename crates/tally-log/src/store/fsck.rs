//! `LogStore::fsck`: recomputes a channel from its records and compares every stored hash.

use tally_core::hash::TreeHasher;
use tally_core::ChannelId;

use super::layout::{
    entry_key, key_index, tile_key, tile_offset, upper_key, BLOCK, TILE_HASHES, TILE_HEIGHT,
};
use super::{FsckReport, LogStore};
use crate::error::LogError;
use crate::tree::Frontier;

impl<H: TreeHasher> LogStore<H> {
    /// Recomputes `channel`'s whole log from its records and compares every stored hash (tiles
    /// and upper levels) and the head root. Reports the first record index where anything
    /// disagrees: for a bad stored hash, the record whose append completed it.
    pub fn fsck(&self, channel: &ChannelId) -> Result<FsckReport, LogError> {
        let head = self.head(channel);
        let size = head.map_or(0, |h| h.size);
        let mut report = FsckReport {
            channel: *channel,
            size,
            first_bad_index: None,
            problem: None,
            note: None,
        };
        let bad = |report: &mut FsckReport, index: u64, problem: String| {
            report.first_bad_index = Some(index);
            report.problem = Some(problem);
        };
        let complete_blocks = size / BLOCK;
        let mut frontier = Frontier::default();
        let mut tile: Option<sled::IVec> = None;
        let mut expected = 0u64;
        for item in self
            .tree
            .range(entry_key(channel, 0)..entry_key(channel, size))
        {
            let (k, record) = item?;
            let index = key_index(channel, &k)?;
            if index != expected {
                bad(
                    &mut report,
                    expected,
                    format!("record {expected} is missing"),
                );
                return Ok(report);
            }
            let block = index / BLOCK;
            if index % BLOCK == 0 && block < complete_blocks {
                tile = self.tree.get(tile_key(channel, block))?;
                if tile.as_ref().map(|t| t.len()) != Some(TILE_HASHES * 32) {
                    bad(
                        &mut report,
                        index,
                        format!("tile {block} is missing or truncated"),
                    );
                    return Ok(report);
                }
            }
            for (level, k, hash) in frontier.push_record(&self.hasher, &record) {
                let stored = if level >= TILE_HEIGHT {
                    self.tree
                        .get(upper_key(channel, level, k))?
                        .map(|v| v.to_vec())
                } else if block < complete_blocks {
                    let at =
                        32 * (tile_offset(level) + (k - (block << (TILE_HEIGHT - level))) as usize);
                    tile.as_ref()
                        .and_then(|t| t.get(at..at + 32))
                        .map(|b| b.to_vec())
                } else {
                    // The incomplete block's hashes are not stored; they are recomputed from
                    // these same records on open.
                    continue;
                };
                if stored.as_deref() != Some(&hash.0[..]) {
                    bad(
                        &mut report,
                        index,
                        format!(
                            "stored hash at level {level} index {k} does not match record {index}"
                        ),
                    );
                    return Ok(report);
                }
            }
            expected += 1;
        }
        if expected != size {
            bad(
                &mut report,
                expected,
                format!("record {expected} is missing"),
            );
            return Ok(report);
        }
        if self.tree.get(entry_key(channel, size))?.is_some() {
            // Left by a failed commit (or written by an append in flight): never readable,
            // overwritten by the next append, so worth reporting but not damage.
            report.note = Some(format!(
                "record {size} exists beyond the head (a failed or in-flight append)"
            ));
        }
        if let Some(head) = head {
            if head.root != frontier.root(&self.hasher) {
                report.problem = Some("head root does not match the recomputed root".into());
            }
        }
        Ok(report)
    }
}
