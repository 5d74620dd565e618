//! The TOML configuration and the key-file rules.

use tally_core::SecretKey;
use tally_server::config::{read_key_file, read_secp256k1_key_file, write_key_file, GatewayConfig};

const EXAMPLE: &str = r#"
listen = "127.0.0.1:8402"
upstream = "http://127.0.0.1:9000"
data_dir = "data"
provider_key_file = "provider.key"
rpc_url = "http://127.0.0.1:8545"
credit_limit = "1000000"
charge_server_errors = false

[chain]
chain_id = 31337
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
asset = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

[checkpoint]
every_records = 1000
every_seconds = 60
every_amount = "100000"

[refunds]
server_errors = true
over_max = true

[[routes]]
method = "GET"
path = "/v1/items"
match = "prefix"
price = { kind = "fixed", amount = "10" }

[[routes]]
method = "POST"
path = "/v1/complete"
match = "exact"
price = { kind = "metered", units_header = "x-tokens", unit_price = "2", max_amount = "4000" }
"#;

#[test]
fn example_config_parses_into_settings() {
    let cfg = GatewayConfig::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let s = cfg.settings();
    assert_eq!(s.credit_limit, 1_000_000);
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.routes[1].price.max_per_call(), Some(4000));
}

#[test]
fn min_withdraw_delay_defaults_to_six_hours_and_can_be_lowered_to_the_contract_floor() {
    let s = GatewayConfig::parse(EXAMPLE)
        .unwrap_or_else(|e| panic!("{e}"))
        .settings();
    assert_eq!(s.min_withdraw_delay, 6 * 3600);
    assert_eq!(
        s.min_withdraw_delay,
        tally_chain::DEFAULT_MIN_WITHDRAW_DELAY
    );
    let short = format!("min_withdraw_delay = 3600\n{EXAMPLE}");
    let s = GatewayConfig::parse(&short)
        .unwrap_or_else(|e| panic!("{e}"))
        .settings();
    assert_eq!(s.min_withdraw_delay, 3600);
}

/// `token_decimals` only changes how the console shows amounts (spec/HTTP.md §11.3):
/// absent by default, read when given, and not a number over 255.
#[test]
fn token_decimals_is_optional() {
    let s = GatewayConfig::parse(EXAMPLE)
        .unwrap_or_else(|e| panic!("{e}"))
        .settings();
    assert_eq!(s.token_decimals, None);
    let six = format!("token_decimals = 6\n{EXAMPLE}");
    let s = GatewayConfig::parse(&six)
        .unwrap_or_else(|e| panic!("{e}"))
        .settings();
    assert_eq!(s.token_decimals, Some(6));
    assert!(GatewayConfig::parse(&format!("token_decimals = 300\n{EXAMPLE}")).is_err());
}

/// One default, one place: settings built in code (`Settings::new`, what tests and embedders
/// use) accept the same shortest withdraw delay as a config file that leaves it out.
#[test]
fn settings_new_and_the_config_file_share_the_min_withdraw_delay_default() {
    let from_file = GatewayConfig::parse(EXAMPLE)
        .unwrap_or_else(|e| panic!("{e}"))
        .settings();
    let in_code = tally_server::Settings::new(
        "data".into(),
        from_file.chain.clone(),
        from_file.routes.clone(),
    );
    assert_eq!(in_code.min_withdraw_delay, from_file.min_withdraw_delay);
    assert_eq!(
        in_code.min_withdraw_delay,
        tally_chain::DEFAULT_MIN_WITHDRAW_DELAY
    );
}

#[test]
fn config_rejects_unknown_fields_and_float_amounts() {
    let bad = EXAMPLE.replace("charge_server_errors = false", "charge_5xx = false");
    assert!(GatewayConfig::parse(&bad).is_err());
    let float = EXAMPLE.replace("credit_limit = \"1000000\"", "credit_limit = 1.5");
    assert!(GatewayConfig::parse(&float).is_err());
}

#[test]
fn key_file_is_written_0600_and_refused_when_readable_by_others() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("provider.key");
    let key = SecretKey::from_seed(&[4u8; 32]);
    write_key_file(&path, &key).unwrap_or_else(|e| panic!("{e}"));
    let back = read_key_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.public(), key.public());
    // Never overwritten.
    assert!(write_key_file(&path, &key).is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        let err = read_key_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chmod 600"), "{err}");
    }
}

#[test]
fn settlement_table_is_optional_with_defaults_and_resolves_its_key_path() {
    let cfg = GatewayConfig::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.settlement.is_none());
    let with = format!("{EXAMPLE}\n[settlement]\npayee_key_file = \"payee.key\"\n");
    let s = GatewayConfig::parse(&with)
        .unwrap_or_else(|e| panic!("{e}"))
        .settlement
        .unwrap_or_else(|| panic!("no [settlement]"));
    let worker = s.settle_config();
    let defaults = tally_chain::SettleConfig::default();
    assert_eq!(worker.threshold, defaults.threshold);
    assert_eq!(worker.claim_interval, defaults.claim_interval);
    assert_eq!(worker.confirmations, defaults.confirmations);
    assert_eq!(worker.poll_interval, defaults.poll_interval);
    assert_eq!(worker.deadline_margin, defaults.deadline_margin);
    assert_eq!(worker.close_timeout, defaults.close_timeout);
    assert_eq!(
        defaults.close_timeout.as_secs(),
        tally_chain::settle::DEFAULT_CLOSE_TIMEOUT_SECONDS
    );
    let tuned = format!(
        "{EXAMPLE}\n[settlement]\npayee_key_file = \"payee.key\"\nthreshold = \"5\"\nclaim_interval_seconds = 60\nconfirmations = 3\npoll_interval_ms = 100\ndeadline_margin_seconds = 1800\nclose_timeout_seconds = 60\n"
    );
    let worker = GatewayConfig::parse(&tuned)
        .unwrap_or_else(|e| panic!("{e}"))
        .settlement
        .unwrap_or_else(|| panic!("no [settlement]"))
        .settle_config();
    assert_eq!(worker.threshold, 5);
    assert_eq!(worker.claim_interval, std::time::Duration::from_secs(60));
    assert_eq!(worker.confirmations, 3);
    assert_eq!(worker.poll_interval, std::time::Duration::from_millis(100));
    assert_eq!(worker.deadline_margin, std::time::Duration::from_secs(1800));
    assert_eq!(worker.close_timeout, std::time::Duration::from_secs(60));
    // Unknown keys, a float threshold and a missing key file are refused.
    for bad in [
        "payee_key_file = \"payee.key\"\nthreshhold = \"5\"",
        "payee_key_file = \"payee.key\"\nthreshold = 5.0",
        "threshold = \"5\"",
    ] {
        let text = format!("{EXAMPLE}\n[settlement]\n{bad}\n");
        assert!(GatewayConfig::parse(&text).is_err(), "{bad}");
    }
    // Relative to the config file, like provider_key_file.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, &with).unwrap_or_else(|e| panic!("{e}"));
    let loaded = GatewayConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.settlement.map(|s| s.payee_key_file),
        Some(dir.path().join("payee.key"))
    );
}

#[test]
fn secp256k1_key_file_follows_the_same_rules() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("payee.key");
    let seed = [9u8; 32];
    write_key_file(&path, &SecretKey::from_seed(&seed)).unwrap_or_else(|e| panic!("{e}"));
    let key = read_secp256k1_key_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key.to_bytes().0, seed);
    // Zero is no secp256k1 secret.
    let zero = dir.path().join("zero.key");
    write_key_file(&zero, &SecretKey::from_seed(&[0u8; 32])).unwrap_or_else(|e| panic!("{e}"));
    let err = read_secp256k1_key_file(&zero)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not a secp256k1 secret key"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        let err = read_secp256k1_key_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("chmod 600"), "{err}");
    }
}

#[test]
fn limits_default_safely_and_refuse_zeros_and_unknown_keys() {
    let cfg = GatewayConfig::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let limits = cfg.limits.server_limits().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limits, tally_server::ServerLimits::default());
    assert_eq!(limits.header_read_timeout.as_millis(), 10_000);
    assert_eq!(limits.body_read_timeout.as_millis(), 30_000);
    assert_eq!(limits.idle_timeout.as_millis(), 60_000);
    assert_eq!(
        (limits.max_connections, limits.max_inflight_paid),
        (1024, 256)
    );

    let set = format!(
        "{EXAMPLE}\n[limits]\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 400\nidle_timeout_ms = 500\nmax_connections = 7\nmax_inflight_paid = 3\n"
    );
    let cfg = GatewayConfig::parse(&set).unwrap_or_else(|e| panic!("{e}"));
    let limits = cfg.limits.server_limits().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limits.header_read_timeout.as_millis(), 300);
    assert_eq!(limits.body_read_timeout.as_millis(), 400);
    assert_eq!(limits.idle_timeout.as_millis(), 500);
    assert_eq!((limits.max_connections, limits.max_inflight_paid), (7, 3));

    // Only the keys given change.
    let one = format!("{EXAMPLE}\n[limits]\nmax_connections = 9\n");
    let limits = GatewayConfig::parse(&one)
        .unwrap_or_else(|e| panic!("{e}"))
        .limits
        .server_limits()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limits.max_connections, 9);
    assert_eq!(limits.idle_timeout.as_millis(), 60_000);

    for zero in [
        "header_read_timeout_ms",
        "body_read_timeout_ms",
        "idle_timeout_ms",
        "max_connections",
        "max_inflight_paid",
    ] {
        let text = format!("{EXAMPLE}\n[limits]\n{zero} = 0\n");
        let err = GatewayConfig::parse(&text).err();
        assert!(
            err.as_ref().is_some_and(|e| e.to_string().contains(zero)),
            "{zero} = 0 accepted: {err:?}"
        );
    }
    let forever = format!("{EXAMPLE}\n[limits]\nidle_timeout_ms = 18446744073709551615\n");
    assert!(GatewayConfig::parse(&forever).is_err());
    let unknown = format!("{EXAMPLE}\n[limits]\nmax_conns = 5\n");
    assert!(GatewayConfig::parse(&unknown).is_err());
}

#[cfg(unix)]
#[test]
fn admin_token_file_is_read_relative_to_the_config_0600_only_and_long_enough() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        EXAMPLE.replacen(
            "[chain]",
            "admin_token_file = \"admin.token\"\n\n[chain]",
            1,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = dir.path().join("admin.token");
    let write = |text: &str, mode: u32| {
        std::fs::write(&token, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    let cfg = GatewayConfig::load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.admin_token_file.as_deref(), Some(token.as_path()));
    // No settings without the file.
    assert!(cfg.gateway_settings().is_err());

    let good = "0123456789abcdef0123456789abcdef";
    write(&format!("{good}\n"), 0o600);
    let s = cfg.gateway_settings().unwrap_or_else(|e| panic!("{e}"));
    let admin = s.admin_token.unwrap_or_else(|| panic!("no admin token"));
    assert!(admin.matches(good.as_bytes()));
    assert!(!admin.matches(b"0123456789abcdef0123456789abcdeF"));
    assert!(
        !format!("{admin:?}").contains(good),
        "Debug leaks the token"
    );

    write(good, 0o644);
    let err = cfg
        .gateway_settings()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("chmod 600"), "{err}");
    write("too short", 0o600);
    assert!(cfg.gateway_settings().is_err());
    write("0123456789abcdef 0123456789abcdef", 0o600);
    assert!(cfg.gateway_settings().is_err());
    // Without the key, no admin token.
    let plain = GatewayConfig::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain
        .gateway_settings()
        .unwrap_or_else(|e| panic!("{e}"))
        .admin_token
        .is_none());
}
