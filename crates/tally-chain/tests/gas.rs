//! Gas regression: claim must stay within 10% of the recorded value (gas-baseline.json,
//! written by the gas-report example) and within the protocol's absolute targets.

use tally_chain::{anvil, gas};

#[tokio::test]
async fn claim_gas_within_recorded_and_targets() {
    let node = anvil::spawn_default().unwrap_or_else(|e| panic!("{e}"));
    let report = gas::measure(&node, 3).await.unwrap();
    let baseline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gas-baseline.json");
    let recorded = gas::recorded_claim_gas(&baseline).unwrap();
    assert!(
        report.claim * 10 <= recorded * 11,
        "claim gas regressed: {} measured vs {} recorded (>10%); if intended, rerun the gas-report example",
        report.claim,
        recorded
    );
    assert!(
        report.claim <= 80_000,
        "claim {} over the 80k target",
        report.claim
    );
    let marginal = report.claim_many_marginal(100).unwrap();
    assert!(
        marginal <= 35_000,
        "claimMany {marginal} per additional channel over the 35k target"
    );
    assert!(report.x402_transfer > 0 && report.open > report.claim);
}
