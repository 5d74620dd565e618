//! The keys and values of the sled tree `logs` (the table in the module docs of `store`).

use tally_core::hash::Hash;
use tally_core::ChannelId;

use super::Head;
use crate::error::LogError;

pub(super) const FORMAT: u8 = b'V';
pub(super) const ENTRY: u8 = b'E';
pub(super) const TILE: u8 = b'T';
pub(super) const UPPER: u8 = b'U';
pub(super) const HEAD: u8 = b'M';
pub(super) const CHECKPOINT: u8 = b'C';
pub(super) const KEYED: u8 = b'K';

/// Height of a tile: a tile holds the stored hashes of levels `0..TILE_HEIGHT` of one block of
/// `2^TILE_HEIGHT` leaves.
pub const TILE_HEIGHT: u8 = 6;
pub(super) const BLOCK: u64 = 1 << TILE_HEIGHT;
/// Hashes in a tile: 64 + 32 + 16 + 8 + 4 + 2.
pub(super) const TILE_HASHES: usize = 126;

/// Offset (in hashes) of `level`'s first hash inside a tile.
pub(super) fn tile_offset(level: u8) -> usize {
    128 - (128 >> level)
}

pub(super) fn entry_key(channel: &ChannelId, index: u64) -> [u8; 41] {
    channel_key(ENTRY, channel, index)
}

pub(super) fn tile_key(channel: &ChannelId, block: u64) -> [u8; 41] {
    channel_key(TILE, channel, block)
}

pub(super) fn checkpoint_key(channel: &ChannelId, size: u64) -> [u8; 41] {
    channel_key(CHECKPOINT, channel, size)
}

pub(super) fn channel_key(tag: u8, channel: &ChannelId, n: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = tag;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&n.to_be_bytes());
    k
}

pub(super) fn upper_key(channel: &ChannelId, level: u8, index: u64) -> [u8; 42] {
    let mut k = [0u8; 42];
    k[0] = UPPER;
    k[1..33].copy_from_slice(&channel.0);
    k[33] = level;
    k[34..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(super) fn keyed_key(channel: &ChannelId, key: u32) -> [u8; 37] {
    let mut k = [0u8; 37];
    k[0] = KEYED;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&key.to_be_bytes());
    k
}

pub(super) fn head_key(channel: &ChannelId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = HEAD;
    k[1..].copy_from_slice(&channel.0);
    k
}

pub(super) fn encode_head(head: &Head) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..8].copy_from_slice(&head.size.to_be_bytes());
    v[8..].copy_from_slice(&head.root.0);
    v
}

pub(super) fn decode_head(v: &[u8]) -> Option<Head> {
    if v.len() != 40 {
        return None;
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&v[8..]);
    Some(Head {
        size: be_u64(&v[..8]),
        root: Hash(root),
    })
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// The big-endian number at the end of a 41-byte key, refusing a key of another length
/// (which only corruption can produce).
pub(super) fn key_index(channel: &ChannelId, key: &[u8]) -> Result<u64, LogError> {
    match key.get(33..) {
        Some(tail) if tail.len() == 8 => Ok(be_u64(tail)),
        _ => Err(LogError::Corrupt {
            channel: *channel,
            detail: format!("key of {} bytes where 41 are expected", key.len()),
        }),
    }
}
