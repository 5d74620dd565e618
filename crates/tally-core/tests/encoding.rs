//! The canonical encoding admits exactly one byte string per message: round trips hold, and
//! truncation, trailing bytes, a foreign prefix or version, and arbitrary corruption are
//! refused or decode to a different message (never the same one).

use proptest::prelude::*;
use tally_core::encoding::Canonical;
use tally_core::{Authorization, ChannelId, Hash, Outcome, Record, Signature};

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

prop_compose! {
    fn authorization()(channel in any::<[u8; 32]>(), lane in any::<u32>(), seq in any::<u64>(),
                       request in hash(), max in any::<u128>(), size in any::<u64>(), root in hash(),
                       cum in any::<u128>(), terms in hash())
                       -> Authorization {
        Authorization { version: 2, channel_id: ChannelId(channel), lane, seq, request_hash: request,
                        max_amount: max, ack_size: size, ack_root: root, ack_cumulative: cum,
                        terms_hash: terms }
    }
}

prop_compose! {
    fn outcome()(channel in any::<[u8; 32]>(), lane in any::<u32>(), seq in any::<u64>(),
                 index in any::<u64>(), auth in hash(), units in any::<[u64; 4]>(),
                 amount in any::<i128>(), cum in any::<u128>(), resp in hash(), time in any::<u64>())
                 -> Outcome {
        Outcome { version: 2, channel_id: ChannelId(channel), lane, seq, index, authorization_hash: auth, units,
                  amount, cumulative: cum, response_hash: resp, time_ms: time }
    }
}

prop_compose! {
    fn record()(a in authorization(), sig in proptest::collection::vec(any::<u8>(), 64), o in outcome())
                -> Record {
        let mut s = [0u8; 64];
        s.copy_from_slice(&sig);
        Record::new(a, Signature(s), o)
    }
}

fn check_strict<T: Canonical + PartialEq + std::fmt::Debug>(value: &T, flip_at: usize, flip: u8) {
    let bytes = value.to_bytes();
    assert_eq!(&T::from_bytes(&bytes).expect("round trip"), value);
    for len in 0..bytes.len() {
        assert!(
            T::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(T::from_bytes(&longer).is_err(), "trailing byte accepted");
    let mut mutated = bytes.clone();
    let at = flip_at % bytes.len();
    mutated[at] ^= flip | 1;
    match T::from_bytes(&mutated) {
        Err(_) => {}
        Ok(other) => {
            assert_ne!(&other, value, "a changed byte decoded to the same message");
            assert_eq!(
                other.to_bytes(),
                mutated,
                "decoded value does not re-encode to its input"
            );
        }
    }
}

proptest! {
    #[test]
    fn authorization_is_canonical(a in authorization(), at in any::<usize>(), f in any::<u8>()) {
        check_strict(&a, at, f);
    }

    #[test]
    fn outcome_is_canonical(o in outcome(), at in any::<usize>(), f in any::<u8>()) {
        check_strict(&o, at, f);
    }

    #[test]
    fn record_is_canonical(r in record(), at in any::<usize>(), f in any::<u8>()) {
        check_strict(&r, at, f);
    }
}

#[test]
fn wrong_version_and_prefix_are_refused() {
    let a = Authorization {
        version: 2,
        channel_id: ChannelId([1; 32]),
        lane: 3,
        seq: 7,
        request_hash: Hash([2; 32]),
        max_amount: 10,
        ack_size: 5,
        ack_root: Hash([3; 32]),
        ack_cumulative: 0,
        terms_hash: Hash([4; 32]),
    };
    let bytes = a.to_bytes();
    // Version 1 (lanes-less) messages are not spoken any more (DESIGN-DECISIONS.md).
    let mut v1 = bytes.clone();
    v1[Authorization::DOMAIN.len()] = 1;
    assert!(matches!(
        Authorization::from_bytes(&v1),
        Err(tally_core::Error::UnsupportedVersion { found: 1, .. })
    ));
    // An authorization's bytes are not an outcome, even if lengths were to line up.
    assert!(matches!(
        Outcome::from_bytes(&bytes),
        Err(tally_core::Error::WrongDomain { .. })
    ));
}
