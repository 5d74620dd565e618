//! A missing anvil is an error with install advice, never a skipped test. Its own test binary,
//! because it changes the process environment.

use tally_chain::{anvil, ChainError};

/// `TALLY_ANVIL` pointing nowhere is an error naming that path with install advice; the
/// override is trusted as given, so nothing is installed in its place. Without it, the
/// project-local tools are installed on demand (once, under the lock) and anvil is found.
#[test]
fn missing_anvil_is_a_clear_error() {
    std::env::set_var(anvil::ANVIL_ENV, "/nonexistent/anvil");
    let err = anvil::spawn_default().unwrap_err();
    match &err {
        ChainError::AnvilNotFound { path, .. } => assert_eq!(path, "/nonexistent/anvil"),
        other => panic!("expected AnvilNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains("tools/install.sh"), "{err}");
    assert!(matches!(
        anvil::ensure_anvil(),
        Err(ChainError::AnvilNotFound { .. })
    ));
    std::env::remove_var(anvil::ANVIL_ENV);
    let path = anvil::ensure_anvil().unwrap();
    assert!(path.ends_with(anvil::ANVIL_IN_REPO), "{}", path.display());
    assert!(path.is_file());
}
