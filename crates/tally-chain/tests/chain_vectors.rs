//! spec/vectors/chain.json is what the code produces (regenerating changes nothing), and its
//! relay bodies, read back by the relay's own types, carry signatures that verify.

#[path = "../examples/gen-chain-vectors.rs"]
mod gen;

use alloy::primitives::{Address, U256};
use alloy::sol_types::Eip712Domain;
use serde_json::Value;
use tally_chain::{DepositDomains, GaslessOpen, GaslessTopUp};

fn committed() -> String {
    let path = gen::vectors_dir().join("chain.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn committed_chain_vectors_equal_generated() {
    let generated = gen::generate().unwrap();
    assert_eq!(
        committed(),
        generated,
        "spec/vectors/chain.json is stale; run `cargo run -p tally-chain --example gen-chain-vectors`"
    );
}

fn domains(v: &Value) -> DepositDomains {
    let t = &v["token_domain"];
    let token: Address = t["verifying_contract"].as_str().unwrap().parse().unwrap();
    let contract: Address = v["tally_domain"]["verifying_contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let chain_id = t["chain_id"].as_u64().unwrap();
    DepositDomains {
        chain_id,
        contract,
        token: Eip712Domain::new(
            Some(t["name"].as_str().unwrap().to_string().into()),
            Some(t["version"].as_str().unwrap().to_string().into()),
            Some(U256::from(chain_id)),
            Some(token),
            None,
        ),
    }
}

#[test]
fn committed_relay_bodies_parse_verify_and_reserialize() {
    let v: Value = serde_json::from_str(&committed()).unwrap();
    let d = domains(&v);
    for path in ["eip3009", "permit"] {
        let body = v["open"][path]["body"].as_str().unwrap();
        let open: GaslessOpen = serde_json::from_str(body).unwrap();
        open.verify(&d).unwrap();
        assert_eq!(serde_json::to_string(&open).unwrap(), body);
        let mut bent = open;
        bent.withdraw_delay += 1;
        assert!(bent.verify(&d).is_err(), "{path}: a bent open verified");

        let body = v["top_up"][path]["body"].as_str().unwrap();
        let top_up: GaslessTopUp = serde_json::from_str(body).unwrap();
        top_up.verify(&d).unwrap();
        assert_eq!(serde_json::to_string(&top_up).unwrap(), body);
        let mut bent = top_up;
        bent.amount -= 1;
        assert!(bent.verify(&d).is_err(), "{path}: a bent top-up verified");
    }
}
