//! The checkpoint note parser and verifier on arbitrary text: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_core::checkpoint::SignedCheckpoint;
use tally_core::{Checkpoint, SecretKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let client = SecretKey::from_seed(&[1; 32]).public();
    let provider = SecretKey::from_seed(&[2; 32]).public();
    let _ = SignedCheckpoint::from_note(text, &client, &provider, true);
    if let Ok(cp) = Checkpoint::parse_body(text) {
        assert_eq!(cp.body(), text);
    }
});
