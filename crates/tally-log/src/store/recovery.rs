//! Opening a store: the format marker and the check of every channel's head.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tally_core::hash::{Hash, TreeHasher};
use tally_core::ChannelId;

use super::layout::*;
use super::reader::{
    latest_checkpoint, load_partial, read_record, ChannelReader, Memory, MemoryMap,
};
use super::Head;
use crate::error::LogError;
use crate::tree::{range_hash, Frontier};

/// Refuses a store written with another hasher or format; marks a new store.
pub(super) fn check_format<H: TreeHasher>(
    db: &sled::Db,
    tree: &sled::Tree,
    hasher: &H,
) -> Result<(), LogError> {
    let want = format!("tally-log/1 {}", hasher.name());
    match tree.get([FORMAT])? {
        Some(v) if v.as_ref() == want.as_bytes() => Ok(()),
        Some(v) => Err(LogError::Format {
            found: String::from_utf8_lossy(&v).into_owned(),
            expected: want,
        }),
        None if tree.is_empty() => {
            tree.insert([FORMAT], want.as_bytes())?;
            db.flush()?;
            Ok(())
        }
        None => Err(LogError::Format {
            found: "no format marker".into(),
            expected: want,
        }),
    }
}

pub(super) fn load_and_check_heads<H: TreeHasher>(
    tree: &sled::Tree,
    hasher: &H,
) -> Result<(HashMap<ChannelId, Head>, MemoryMap), LogError> {
    let mut heads = HashMap::new();
    let mut memories = HashMap::new();
    for item in tree.scan_prefix([HEAD]) {
        let (k, v) = item?;
        let id: [u8; 32] = k[1..].try_into().map_err(|_| LogError::Corrupt {
            channel: ChannelId::default(),
            detail: "head key of wrong length".into(),
        })?;
        let channel = ChannelId(id);
        let head = decode_head(&v).ok_or_else(|| LogError::Corrupt {
            channel,
            detail: "head value of wrong length".into(),
        })?;
        let memory = Arc::new(Memory {
            partial: RwLock::new(Arc::new(load_partial(tree, hasher, &channel, head.size)?)),
            upper: RwLock::new(None),
        });
        let reader = ChannelReader::new(tree, &channel, Some(memory.clone()));
        let root = Frontier::load(&reader, head.size)?.root(hasher);
        if root != head.root {
            return Err(LogError::Corrupt {
                channel,
                detail: format!(
                    "stored hashes give a different root at head size {}",
                    head.size
                ),
            });
        }
        if head.size > 0 {
            read_record(tree, &channel, head.size - 1)?;
        }
        if let Some((size, cp_root, _)) = latest_checkpoint(tree, &channel)? {
            let at = if size <= head.size {
                range_hash(hasher, &reader, 0, size)?
            } else {
                Hash::default()
            };
            if size > head.size || at != cp_root {
                return Err(LogError::Corrupt {
                    channel,
                    detail: format!("the latest checkpoint (size {size}) does not match the log"),
                });
            }
        }
        heads.insert(channel, head);
        memories.insert(channel, memory);
    }
    Ok((heads, memories))
}
