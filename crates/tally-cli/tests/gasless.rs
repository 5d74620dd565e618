//! `tally channel open|topup --gasless --provider URL` as the built binary, against `tally
//! serve` (a real process with a `[relay]` table) on a real anvil: a payer wallet holding the
//! token and no ETH opens a channel with EIP-3009 and with a permit and tops it up, naming
//! nothing but the provider and the RPC; flags that contradict the provider's terms and a
//! relay wallet that is the payee's are refused. A missing anvil fails the test.

mod common;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::*;
use tally_chain::contract::TestToken;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn str_of(v: &serde_json::Value, key: &str) -> String {
    match v[key].as_str() {
        Some(s) => s.to_string(),
        None => panic!("no string {key:?} in {v}"),
    }
}

#[test]
fn a_payer_without_eth_opens_and_tops_up_through_tally_serve() {
    let rt = ok("runtime", tokio::runtime::Runtime::new());
    let dir = tmp();
    let note = |_: &str| {};
    let local = ok(
        "local chain (is anvil installed? bash tools/install.sh)",
        rt.block_on(tally_cli::chain::start_local(1_000_000, &note)),
    );
    let upstream = ok("upstream", rt.block_on(tally_cli::upstream::start()));
    let gw = dir.path().join("gw");
    expect(&run(&["keygen", "--provider", "--dir", path(&gw)]), 0);
    ok(
        "payee key",
        tally_cli::keys::write_secp256k1(&gw.join("payee.key"), &local.payee),
    );
    ok(
        "relay key",
        tally_cli::keys::write_secp256k1(&gw.join("relay.key"), &local.relayer),
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let file = tally_cli::gateway::GatewayFile::new(
        &format!("127.0.0.1:{port}"),
        &upstream.url(),
        &local.rpc,
        local.chain_terms(31337),
        tally_cli::upstream::prices(),
    );
    let text = ok("gateway config", file.to_toml());
    let config = gw.join("gateway.toml");

    // A relay needs its minimum deposit set: the provider decides what a channel is worth.
    write(
        &config,
        &format!("{text}\n[relay]\nkey_file = \"relay.key\"\n"),
    );
    let refused = run(&["serve", "--config", path(&config)]);
    expect(&refused, 2);
    assert!(
        stderr(&refused).contains("min_deposit"),
        "{}",
        stderr(&refused)
    );
    // The relay's wallet must not be the payee's: refused at start-up.
    write(&config, &format!("{text}\n[settlement]\npayee_key_file = \"payee.key\"\n[relay]\nkey_file = \"payee.key\"\nmin_deposit = \"10\"\n"));
    let refused = run(&["serve", "--config", path(&config)]);
    expect(&refused, 2);
    assert!(
        stderr(&refused).contains("wallet of its own"),
        "{}",
        stderr(&refused)
    );

    write(
        &config,
        &format!("{text}\n[relay]\nkey_file = \"relay.key\"\nmin_deposit = \"10\"\n"),
    );
    let serve = start_serve(&config);
    assert!(
        serve
            .startup
            .iter()
            .any(|l| l.contains("relaying gasless deposits")),
        "{:?}",
        serve.startup
    );

    // An agent wallet: tokens, no ETH.
    let agent = PrivateKeySigner::random();
    let node = tally_chain::channel::connect(ok("url", local.rpc.parse()), local.payer.clone());
    let token = TestToken::new(local.token, node.clone());
    let minted = ok(
        "mint",
        rt.block_on(token.mint(agent.address(), U256::from(10_000u64)).send()),
    );
    ok(
        "mint receipt",
        rt.block_on(tally_chain::channel::finish(minted)),
    );
    let agent_key = dir.path().join("agent.key");
    ok(
        "agent key",
        tally_cli::keys::write_secp256k1(&agent_key, &agent),
    );
    let client = dir.path().join("client");
    expect(&run(&["keygen", "--dir", path(&client)]), 0);
    let eth = || {
        ok(
            "balance",
            rt.block_on(async { node.get_balance(agent.address()).await }),
        )
    };

    let base = [
        "--json",
        "channel",
        "open",
        "--client",
        path(&client),
        "--payer-key",
        path(&agent_key),
    ];
    let provider = ["--provider", url.as_str(), "--rpc", local.rpc.as_str()];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(provider);
    args.extend(["--gasless", "--amount", "4000"]);
    let opened = run(&args);
    expect(&opened, 0);
    let v = json(&opened);
    assert_eq!(v["relayed"], true);
    assert_eq!(
        str_of(&v, "payer").to_lowercase(),
        agent.address().to_string().to_lowercase()
    );
    assert_eq!(
        str_of(&v, "payee").to_lowercase(),
        local.payee.address().to_string().to_lowercase()
    );
    assert_eq!(str_of(&v, "deposit"), "4000");
    assert_eq!(eth(), U256::ZERO);
    let id = str_of(&v, "channel_id");

    // The same with a permit.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(provider);
    args.extend(["--gasless", "--auth", "permit", "--amount", "1000"]);
    let permit = run(&args);
    expect(&permit, 0);
    assert_eq!(str_of(&json(&permit), "deposit"), "1000");

    // A gasless top-up of the first channel.
    let top = run(&[
        "--json",
        "channel",
        "topup",
        "--channel",
        &id,
        "--payer-key",
        path(&agent_key),
        "--provider",
        &url,
        "--rpc",
        &local.rpc,
        "--gasless",
        "--amount",
        "700",
    ]);
    expect(&top, 0);
    assert_eq!(str_of(&json(&top), "deposit"), "4700");
    assert_eq!(eth(), U256::ZERO);

    // A flag that contradicts the provider's terms is a usage error; nothing is sent.
    let other = Address::repeat_byte(0x42).to_string();
    let mut args: Vec<&str> = base.to_vec();
    args.extend(provider);
    args.extend(["--gasless", "--amount", "100", "--payee", &other]);
    let mismatch = run(&args);
    expect(&mismatch, 2);
    assert!(
        stderr(&mismatch).contains("differs from the provider's terms"),
        "{}",
        stderr(&mismatch)
    );
    // The relay refuses a delay below the gateway's minimum (six hours by default).
    let mut args: Vec<&str> = base.to_vec();
    args.extend(provider);
    args.extend(["--gasless", "--amount", "100", "--withdraw-delay", "3600"]);
    let short = run(&args);
    expect(&short, 2);
    assert!(
        stderr(&short).contains("relay_refused"),
        "{}",
        stderr(&short)
    );
    // --gasless needs --provider.
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--rpc", &local.rpc, "--gasless", "--amount", "100"]);
    expect(&run(&args), 2);
    assert_eq!(
        ok(
            "balance",
            rt.block_on(async { token.balanceOf(agent.address()).call().await })
        ),
        U256::from(10_000u64 - 5_700)
    );

    assert_eq!(serve.interrupt(), 0);

    // A provider whose terms name a contract that is not Tally (here: the token) gets no
    // approval, permit or authorization: the CLI checks the code before it signs anything.
    let port = free_port();
    let mut terms = local.chain_terms(31337);
    terms.contract = local.token.to_string();
    let file = tally_cli::gateway::GatewayFile::new(
        &format!("127.0.0.1:{port}"),
        &upstream.url(),
        &local.rpc,
        terms,
        tally_cli::upstream::prices(),
    );
    write(&config, &ok("gateway config", file.to_toml()));
    let hostile = start_serve(&config);
    let url = format!("http://127.0.0.1:{port}");
    for gasless in [true, false] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend([
            "--provider",
            url.as_str(),
            "--rpc",
            local.rpc.as_str(),
            "--amount",
            "100",
        ]);
        if gasless {
            args.push("--gasless");
        }
        let refused = run(&args);
        expect(&refused, 1);
        assert!(
            stderr(&refused).contains("refusing to fund it"),
            "{}",
            stderr(&refused)
        );
    }
    assert_eq!(hostile.interrupt(), 0);
    rt.block_on(upstream.stop());
}
