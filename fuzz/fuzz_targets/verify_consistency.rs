//! The consistency verifier on arbitrary sizes and hashes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_log::{verify_consistency, Blake3Hasher, Hash};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let old = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let new = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let hashes: Vec<Hash> = data[16..]
        .chunks_exact(32)
        .map(|c| Hash(c.try_into().unwrap_or_default()))
        .collect();
    if hashes.len() >= 2 {
        let _ = verify_consistency(
            &Blake3Hasher,
            old,
            new,
            &hashes[2..],
            &hashes[0],
            &hashes[1],
        );
    }
});
