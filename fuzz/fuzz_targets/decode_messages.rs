//! Every canonical decoder on arbitrary bytes: never a panic, and anything accepted
//! re-encodes to exactly the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_core::encoding::Canonical;
use tally_core::{Authorization, Outcome, Record, Restore};

fn check<T: Canonical>(data: &[u8]) {
    if let Ok(v) = T::from_bytes(data) {
        assert_eq!(v.to_bytes(), data);
    }
}

fuzz_target!(|data: &[u8]| {
    // Try each type both on the raw input and with its prefix prepended, so the fuzzer
    // reaches the body decoder without having to discover the prefix.
    for prefix in [&b""[..], Authorization::DOMAIN] {
        check::<Authorization>(&[prefix, data].concat());
    }
    for prefix in [&b""[..], Outcome::DOMAIN] {
        check::<Outcome>(&[prefix, data].concat());
    }
    for prefix in [&b""[..], Record::DOMAIN] {
        let bytes = [prefix, data].concat();
        check::<Record>(&bytes);
        if let Ok(r) = Record::from_bytes(&bytes) {
            let _ = r.check_consistency();
        }
    }
    for prefix in [&b""[..], Restore::DOMAIN] {
        check::<Restore>(&[prefix, data].concat());
    }
});
