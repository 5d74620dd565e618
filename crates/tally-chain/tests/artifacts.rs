//! The committed artifacts must be exactly what compile.js produces from the sources now.

use std::process::Command;

#[test]
fn committed_artifacts_match_a_fresh_compile() {
    // solc comes from the project-local tools, installed on demand like anvil.
    tally_chain::anvil::ensure_tools().unwrap_or_else(|e| panic!("{e}"));
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("node")
        .arg(crate_dir.join("contracts/compile.js"))
        .arg(out.path())
        .output()
        .expect("node must be installed to check the artifacts");
    assert!(
        run.status.success(),
        "compile.js failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    for name in ["Tally.json", "TestToken.json"] {
        let fresh = std::fs::read(out.path().join(name)).unwrap();
        let committed = std::fs::read(crate_dir.join("artifacts").join(name)).unwrap();
        assert!(
            fresh == committed,
            "artifacts/{name} is stale: run `node crates/tally-chain/contracts/compile.js`"
        );
    }
}
