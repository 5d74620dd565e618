//! Writes GAS.md at the repository root and crates/tally-chain/gas-baseline.json (the value
//! the gas regression test compares against), measured on a fresh project-local anvil.
//!
//! cargo run -p tally-chain --example gas-report --release

use std::process::ExitCode;

use tally_chain::{anvil, gas, ChainError};

async fn run() -> Result<(), ChainError> {
    let node = anvil::spawn_default()?;
    let report = gas::measure(&node, 50).await?;
    let anvil_version = std::process::Command::new(anvil::anvil_path()?)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("anvil")
                .trim()
                .to_string()
        })?;
    let artifact = std::fs::read_to_string(
        anvil::repo_root().join("crates/tally-chain/artifacts/Tally.json"),
    )?;
    let solc = serde_json::from_str::<serde_json::Value>(&artifact)
        .ok()
        .and_then(|v| {
            v.get("compiler")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "solc".to_string());
    let md = gas::render_markdown(&report, &anvil_version, &solc);
    std::fs::write(anvil::repo_root().join("GAS.md"), &md)?;
    std::fs::write(
        anvil::repo_root().join("crates/tally-chain/gas-baseline.json"),
        gas::baseline_json(&report),
    )?;
    print!("{md}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gas-report: {e}");
            ExitCode::FAILURE
        }
    }
}
