//! The relay's request decoders (spec/HTTP.md §12) and their offline signature checks on
//! arbitrary bytes: never a panic, and nothing but the one signed request verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use alloy::primitives::{Address, U256};
use alloy::sol_types::Eip712Domain;
use tally_chain::{DepositDomains, GaslessOpen, GaslessTopUp};

fuzz_target!(|data: &[u8]| {
    let d = DepositDomains {
        chain_id: 31337,
        contract: Address::repeat_byte(1),
        token: Eip712Domain::new(
            Some("Tally Test USD".into()),
            Some("1".into()),
            Some(U256::from(31337)),
            Some(Address::repeat_byte(2)),
            None,
        ),
    };
    if let Ok(open) = serde_json::from_slice::<GaslessOpen>(data) {
        let _ = open.verify(&d);
        let again = serde_json::to_vec(&open).expect("a decoded request encodes");
        let back: GaslessOpen = serde_json::from_slice(&again).expect("and decodes again");
        assert_eq!(back, open);
    }
    if let Ok(top_up) = serde_json::from_slice::<GaslessTopUp>(data) {
        let _ = top_up.verify(&d);
        let again = serde_json::to_vec(&top_up).expect("a decoded request encodes");
        let back: GaslessTopUp = serde_json::from_slice(&again).expect("and decodes again");
        assert_eq!(back, top_up);
    }
});
