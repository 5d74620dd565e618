//! Proof-bundle JSON parsing and full bundle verification on arbitrary input: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_core::ProofBundle;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bundle) = ProofBundle::from_json(text) {
        let _ = tally_log::bundle::verify_bundle(&bundle);
    }
});
