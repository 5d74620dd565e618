//! A missing anvil is an error with install advice, never a skipped test. Its own test binary,
//! because it changes the process environment.

use tally_chain::{anvil, ChainError};

#[test]
fn missing_anvil_is_a_clear_error() {
    std::env::set_var(anvil::ANVIL_ENV, "/nonexistent/anvil");
    let err = anvil::spawn_default().unwrap_err();
    match &err {
        ChainError::AnvilNotFound { path, .. } => assert_eq!(path, "/nonexistent/anvil"),
        other => panic!("expected AnvilNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("tools/install.sh"), "{err}");
    std::env::remove_var(anvil::ANVIL_ENV);
    // Without the override the project-local binary is found (install.sh ran).
    anvil::anvil_path().unwrap();
}
