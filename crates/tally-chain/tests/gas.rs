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

/// GAS.md's per-call table counts a whole channel too, opening and closing included (issue
/// 9): the unilateral exit and the cooperative close, each divided by the calls.
#[tokio::test]
async fn per_call_rows_include_open_and_close() {
    let node = anvil::spawn_default().unwrap_or_else(|e| panic!("{e}"));
    let r = gas::measure(&node, 1).await.unwrap();
    assert_eq!(
        r.lifecycle(),
        r.open + r.claim_first + r.payout + r.initiate_withdraw + r.finalize_withdraw
    );
    assert_eq!(r.cooperative_lifecycle(), r.open + r.cooperative_close);
    let md = gas::render_markdown(&r, "anvil", "solc");
    let coop = format!(
        "| tally whole channel, cooperative: open + cooperativeClose | 1000 | {:.1} |",
        r.cooperative_lifecycle() as f64 / 1000.0
    );
    assert!(md.contains(&coop), "{md}");
    let unilateral = format!(
        "initiateWithdraw + finalizeWithdraw | 1000 | {:.1} |",
        r.lifecycle() as f64 / 1000.0
    );
    assert!(md.contains(&unilateral), "{md}");
}
