//! `tally channel open|topup|withdraw|status` run as the built binary against a real anvil
//! with the real contracts (started the way live.rs starts them; a missing anvil fails the
//! test, it never skips), and the refusals: a bad or unreachable RPC URL, a missing profile.

mod common;

use common::*;

fn str_of<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

#[test]
fn open_status_topup_withdraw_finalize() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    let d = tmp();
    let note = |_: &str| {};
    let local = match rt.block_on(tally_cli::chain::start_local(1_000_000, &note)) {
        Ok(l) => l,
        Err(e) => panic!("local chain (is anvil installed? bash tools/install.sh): {e}"),
    };
    let profile = d.path().join("client");
    let keygen = run(&["--json", "keygen", "--dir", path(&profile)]);
    expect(&keygen, 0);
    let signer = str_of(&json(&keygen), "checkpoint_signer").to_string();
    let payer_key = d.path().join("payer.key");
    if let Err(e) = tally_cli::keys::write_secp256k1(&payer_key, &local.payer) {
        panic!("payer key: {e}");
    }
    let (rpc, contract) = (local.rpc.clone(), local.contract.to_string());
    let (token, payee) = (local.token.to_string(), local.payee.address().to_string());
    let chain = ["--rpc", rpc.as_str(), "--contract", contract.as_str()];
    let pk = path(&payer_key);

    // open
    let mut args = vec!["--json", "channel", "open", "--client", path(&profile)];
    args.extend(["--payer-key", pk, "--token", &token, "--payee", &payee]);
    args.extend(["--amount", "1000", "--withdraw-delay", "7200"]);
    args.extend(chain);
    let opened = run(&args);
    expect(&opened, 0);
    let opened = json(&opened);
    let id = str_of(&opened, "channel_id").to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(
        str_of(&opened, "signer").to_lowercase(),
        signer.to_lowercase()
    );

    // The text form prints the channel id alone on stdout.
    let mut args2 = vec!["channel", "open", "--client", path(&profile)];
    args2.extend(["--payer-key", pk, "--token", &token, "--payee", &payee]);
    args2.extend(["--amount", "10"]);
    args2.extend(chain);
    let second = run(&args2);
    expect(&second, 0);
    let second_id = stdout(&second).trim().to_string();
    assert_eq!(second_id.len(), 64, "{second_id}");
    assert_ne!(second_id, id, "a random salt gives a new channel");

    let status = |id: &str| {
        let mut a = vec!["--json", "channel", "status", "--channel", id];
        a.extend(chain);
        let o = run(&a);
        expect(&o, 0);
        json(&o)
    };

    let s = status(&id);
    assert_eq!(str_of(&s, "deposit"), "1000");
    assert_eq!(str_of(&s, "claimed"), "0");
    assert_eq!(s["claimed_size"], 0);
    assert_eq!(str_of(&s, "claimed_root").len(), 64);
    assert_eq!(s["withdraw_delay"], 7200);
    assert_eq!(s["withdraw"]["state"], "none");
    assert_eq!(
        str_of(&s, "payer").to_lowercase(),
        local.payer.address().to_string().to_lowercase()
    );

    // Human status.
    let mut a = vec!["channel", "status", "--channel", &id];
    a.extend(chain);
    let human = run(&a);
    expect(&human, 0);
    assert!(
        stdout(&human).contains("deposit         1000"),
        "{}",
        stdout(&human)
    );

    // topup
    let mut a = vec!["--json", "channel", "topup", "--channel", &id];
    a.extend(["--payer-key", pk, "--amount", "500"]);
    a.extend(chain);
    let t = run(&a);
    expect(&t, 0);
    assert_eq!(str_of(&json(&t), "deposit"), "1500");
    let s = status(&id);
    assert_eq!(str_of(&s, "deposit"), "1500");
    assert_eq!(s["withdraw"]["state"], "none");

    // finalize before any withdraw is refused.
    let mut fin = vec!["channel", "withdraw", "--finalize", "--channel", &id];
    fin.extend(["--payer-key", pk]);
    fin.extend(chain);
    expect(&run(&fin), 2);

    // withdraw
    let mut a = vec!["--json", "channel", "withdraw", "--channel", &id];
    a.extend(["--payer-key", pk]);
    a.extend(chain);
    let w = run(&a);
    expect(&w, 0);
    let s = status(&id);
    assert_eq!(s["withdraw"]["state"], "pending");
    assert!(s["withdraw"]["at"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(str_of(&s, "deposit"), "1500");
    // A second withdraw is refused.
    expect(&run(&a), 2);

    // Past the delay, finalize closes the channel and refunds the deposit.
    rt.block_on(async {
        use alloy::providers::{Provider, ProviderBuilder};
        let url = match rpc.parse() {
            Ok(u) => u,
            Err(e) => panic!("rpc url: {e}"),
        };
        let p = ProviderBuilder::new().connect_http(url);
        let r: Result<serde_json::Value, _> =
            p.raw_request("evm_increaseTime".into(), (7201u64,)).await;
        if let Err(e) = r {
            panic!("evm_increaseTime: {e}");
        }
        let r: Result<serde_json::Value, _> = p.raw_request("evm_mine".into(), ()).await;
        if let Err(e) = r {
            panic!("evm_mine: {e}");
        }
    });
    let mut fin_json = vec!["--json"];
    fin_json.extend(fin.iter().copied());
    let f = run(&fin_json);
    expect(&f, 0);
    assert_eq!(str_of(&json(&f), "refunded"), "1500");
    let s = status(&id);
    assert_eq!(s["withdraw"]["state"], "closed");
    assert_eq!(str_of(&s, "remaining"), "0");
    // A closed channel takes no top-up.
    let mut a = vec!["channel", "topup", "--channel", &id];
    a.extend(["--payer-key", pk, "--amount", "1"]);
    a.extend(chain);
    expect(&run(&a), 2);

    // Refusals, all exit 2: an unreachable node, a malformed URL, an unknown channel, a
    // missing profile, a wallet that is not the payer.
    for bad in ["http://127.0.0.1:1", "not a url"] {
        let o = run(&[
            "channel",
            "status",
            "--channel",
            &id,
            "--rpc",
            bad,
            "--contract",
            &contract,
        ]);
        expect(&o, 2);
        let mut a = vec!["channel", "open", "--client", path(&profile)];
        a.extend(["--payer-key", pk, "--token", &token, "--payee", &payee]);
        a.extend(["--amount", "10", "--rpc", bad, "--contract", &contract]);
        expect(&run(&a), 2);
    }
    let unknown = "11".repeat(32);
    let mut a = vec!["channel", "status", "--channel", &unknown];
    a.extend(chain);
    expect(&run(&a), 2);
    let missing = d.path().join("no-such-profile");
    let mut a = vec!["channel", "open", "--client", path(&missing)];
    a.extend(["--payer-key", pk, "--token", &token, "--payee", &payee]);
    a.extend(["--amount", "10"]);
    a.extend(chain);
    let o = run(&a);
    expect(&o, 2);
    assert!(stderr(&o).contains("no-such-profile"), "{}", stderr(&o));
    let other_key = d.path().join("other.key");
    if let Err(e) = tally_cli::keys::write_secp256k1(&other_key, &local.payee) {
        panic!("other key: {e}");
    }
    let mut a = vec!["channel", "withdraw", "--channel", &second_id];
    a.extend(["--payer-key", path(&other_key)]);
    a.extend(chain);
    expect(&run(&a), 2);
}

#[test]
fn channel_help_lists_exit_codes_and_request_alias_works() {
    for sub in ["open", "topup", "withdraw", "status"] {
        let o = run(&["channel", sub, "--help"]);
        expect(&o, 0);
        assert!(
            stdout(&o).contains("Exit codes: 0 ok; 1"),
            "{sub}: {}",
            stdout(&o)
        );
    }
    let o = run(&["request", "--help"]);
    expect(&o, 0);
    assert!(stdout(&o).contains("--max-amount"), "{}", stdout(&o));
    let o = run(&["--help"]);
    assert!(stdout(&o).contains("[alias: request]"), "{}", stdout(&o));
    // A missing profile through the alias is exit 2 like `pay`.
    let d = tmp();
    let o = run(&[
        "request",
        "--client",
        path(&d.path().join("none")),
        "/v1/items",
    ]);
    expect(&o, 2);
}
