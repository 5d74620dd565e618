//! `tally contract deploy` as the built binary against a real anvil (a missing anvil fails
//! the test, it never skips): the deployed contract answers, `--config` points a gateway
//! config at it and keeps the file's comments, and the refusals (a key file others can
//! read, a missing config, a pre-Cancun chain, an unreachable node) exit 2 without sending a
//! transaction.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::Address;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use common::*;
use tally_chain::anvil;
use tally_chain::channel::connect;
use tally_chain::TallyClient;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn start(extra: &[&str]) -> AnvilInstance {
    let builder = anvil::builder()
        .unwrap_or_else(|e| panic!("anvil (bash tools/install.sh): {e}"))
        .args(extra.iter().copied());
    anvil::spawn(builder).unwrap_or_else(|e| panic!("anvil: {e}"))
}

/// Dev account 3's key written as a 0600 key file (not account 0, whose first contract is
/// the address the example config already names).
fn deployer_key(node: &AnvilInstance, dir: &Path) -> (std::path::PathBuf, PrivateKeySigner) {
    let key = PrivateKeySigner::from(node.keys()[3].clone());
    let file = dir.join("deployer.key");
    tally_cli::keys::write_secp256k1(&file, &key).unwrap();
    (file, key)
}

fn nonce(node: &AnvilInstance, who: Address) -> u64 {
    let p = ProviderBuilder::new().connect_http(node.endpoint_url());
    rt().block_on(async { p.get_transaction_count(who).await })
        .unwrap()
}

fn example_config(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tally.example.toml");
    let dest = dir.join("gateway.toml");
    std::fs::copy(src, &dest).unwrap();
    dest
}

#[test]
fn deploy_prints_a_working_contract_and_writes_the_config() {
    let node = start(&["--chain-id", "4242"]);
    let d = tmp();
    let (key_file, key) = deployer_key(&node, d.path());
    let cfg = example_config(d.path());
    let before = read(&cfg);
    let rpc = node.endpoint_url().to_string();

    let o = run(&[
        "--json",
        "contract",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        path(&key_file),
        "--config",
        path(&cfg),
    ]);
    expect(&o, 0);
    let v = json(&o);
    let address: Address = v["contract"].as_str().unwrap().parse().unwrap();
    assert_eq!(v["chain_id"], 4242);
    assert_eq!(
        v["deployer"].as_str().unwrap().parse::<Address>().unwrap(),
        key.address()
    );
    assert!(v["tx"]["gas_used"].as_u64().unwrap() > 1_000_000, "{v}");
    assert_eq!(v["config"].as_str().unwrap(), path(&cfg));

    // The address holds the contract: its views answer as this build expects.
    let client = rt()
        .block_on(TallyClient::new(
            connect(node.endpoint_url(), PrivateKeySigner::random()),
            Address::ZERO,
            address,
        ))
        .unwrap();
    let min = rt()
        .block_on(async { client.contract().MIN_WITHDRAW_DELAY().call().await })
        .unwrap();
    assert_eq!(min, tally_chain::MIN_WITHDRAW_DELAY);

    // The config now names this contract on this chain; everything else is as it was.
    let loaded = tally_server::config::GatewayConfig::load(&cfg).unwrap();
    assert_eq!(loaded.chain.contract.parse::<Address>().unwrap(), address);
    assert_eq!(loaded.chain.chain_id, 4242);
    let after = read(&cfg);
    assert!(after.contains(&format!("contract = \"{address}\"   # the Tally contract")));
    assert!(after.contains("chain_id = 4242\n"), "{after}");
    let changed: Vec<_> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "only chain_id and contract change: {changed:?}"
    );
    assert_eq!(before.lines().count(), after.lines().count());

    // Text mode prints the address alone; a second deploy is a new contract.
    let o = run(&[
        "contract",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        path(&key_file),
    ]);
    expect(&o, 0);
    let second: Address = stdout(&o).trim().parse().unwrap();
    assert_ne!(second, address);
    assert_eq!(nonce(&node, key.address()), 2);
}

#[test]
fn a_config_without_a_chain_table_gets_one() {
    let node = start(&[]);
    let d = tmp();
    let (key_file, _) = deployer_key(&node, d.path());
    let cfg = d.path().join("bare.toml");
    write(&cfg, "# mine\nlisten = \"127.0.0.1:8402\"\n");
    let rpc = node.endpoint_url().to_string();
    let o = run(&[
        "--json",
        "contract",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        path(&key_file),
        "--config",
        path(&cfg),
    ]);
    expect(&o, 0);
    let address = json(&o)["contract"].as_str().unwrap().to_string();
    let doc: toml::Table = read(&cfg).parse().unwrap();
    assert_eq!(doc["chain"]["contract"].as_str().unwrap(), address);
    assert_eq!(doc["chain"]["chain_id"].as_integer().unwrap(), 31337);
    assert!(read(&cfg).starts_with("# mine\n"));
}

#[test]
fn refusals_exit_2_and_send_nothing() {
    let node = start(&[]);
    let d = tmp();
    let (key_file, key) = deployer_key(&node, d.path());
    let rpc = node.endpoint_url().to_string();

    // A key file others can read.
    let loose = d.path().join("loose.key");
    std::fs::copy(&key_file, &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["contract", "deploy", "--rpc", &rpc, "--key", path(&loose)]);
    expect(&o, 2);

    // A config that is not there, or not TOML: refused before any gas is spent.
    let missing = d.path().join("missing.toml");
    let args = [
        "contract",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        path(&key_file),
    ];
    let o = run(&[&args[..], &["--config", path(&missing)]].concat());
    expect(&o, 2);
    let bad = d.path().join("bad.toml");
    write(&bad, "chain = 3\n");
    let o = run(&[&args[..], &["--config", path(&bad)]].concat());
    expect(&o, 2);
    assert!(stderr(&o).contains("not a table"), "{}", stderr(&o));
    assert_eq!(read(&bad), "chain = 3\n");

    // An unreachable node.
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let o = run(&[
        "contract",
        "deploy",
        "--rpc",
        &dead,
        "--key",
        path(&key_file),
    ]);
    expect(&o, 2);

    assert_eq!(nonce(&node, key.address()), 0, "nothing was sent");
}

#[test]
fn a_chain_without_cancun_is_refused() {
    let node = start(&["--hardfork", "shanghai"]);
    let d = tmp();
    let (key_file, key) = deployer_key(&node, d.path());
    let rpc = node.endpoint_url().to_string();
    let o = run(&[
        "contract",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        path(&key_file),
    ]);
    expect(&o, 2);
    assert!(stderr(&o).contains("cancun"), "{}", stderr(&o));
    assert_eq!(nonce(&node, key.address()), 0, "nothing was sent");
}
