//! The commands that need live components, against a real anvil, the real contracts and a
//! `tally serve` child process: pay (fixed, metered, free, a failing upstream), checkpoint,
//! verify against the provider's endpoints and the chain, prove, dispute submit, settle,
//! verify-proof against the onchain root, and the refusals of each.

mod common;

use common::*;

#[test]
fn serve_pay_checkpoint_verify_prove_dispute_settle() {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => panic!("runtime: {e}"),
    };
    let d = tmp();
    let note = |_: &str| {};
    let local = match rt.block_on(tally_cli::chain::start_local(u128::MAX / 4, &note)) {
        Ok(l) => l,
        Err(e) => panic!("local chain (is anvil installed? bash tools/install.sh): {e}"),
    };
    let upstream = match rt.block_on(tally_cli::upstream::start()) {
        Ok(u) => u,
        Err(e) => panic!("upstream: {e}"),
    };
    // Provider side: keys and config.
    let gw = d.path().join("gw");
    expect(&run(&["keygen", "--provider", "--dir", path(&gw)]), 0);
    let payee_key = d.path().join("payee.key");
    if let Err(e) = tally_cli::keys::write_secp256k1(&payee_key, &local.payee) {
        panic!("payee key: {e}");
    }
    let config = gw.join("gateway.toml");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut file = tally_cli::gateway::GatewayFile::new(
        &format!("127.0.0.1:{port}"),
        &upstream.url(),
        &local.rpc,
        local.chain_terms(31337),
        tally_cli::upstream::prices(),
    );
    file.checkpoint.every_records = 1000;
    if let Err(e) = file.write(&config) {
        panic!("gateway config: {e}");
    }
    // Client side: keys, channel, profile.
    let cdir = d.path().join("client");
    let o = run(&["--json", "keygen", "--dir", path(&cdir)]);
    expect(&o, 0);
    let signer = json(&o)["checkpoint_signer"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let signer = match signer.parse() {
        Ok(a) => a,
        Err(e) => panic!("signer {signer}: {e}"),
    };
    let (channel, _) = match rt.block_on(tally_cli::chain::open_channel(
        &local.rpc,
        local.contract,
        &local.payer,
        local.payee.address(),
        signer,
        tally_cli::chain::OpenTerms {
            token: local.token,
            deposit: 1_000_000,
            withdraw_delay: tally_cli::chain::DEFAULT_WITHDRAW_DELAY,
            salt: tally_cli::chain::random_salt(),
        },
    )) {
        Ok(c) => c,
        Err(e) => panic!("open: {e}"),
    };
    let serve = start_serve(&config);
    write(
        &cdir.join("client.toml"),
        &format!(
            "provider = \"{url}\"\nchannel_id = \"{}\"\nsession_key_file = \"session.key\"\ncheckpoint_key_file = \"checkpoint.key\"\nrpc_url = \"{}\"\n[chain]\nchain_id = 31337\ncontract = \"{}\"\n",
            channel.to_hex(),
            local.rpc,
            local.contract
        ),
    );
    let c = path(&cdir);

    // pay: fixed, metered, free, failing upstream.
    let o = run(&["pay", "--client", c, "/v1/items/42"]);
    expect(&o, 0);
    assert!(stdout(&o).contains("\"item\":\"42\""), "{}", stdout(&o));
    assert!(stderr(&o).contains("record 0 charged 10"), "{}", stderr(&o));
    let o = run(&[
        "--json",
        "pay",
        "--client",
        c,
        "-X",
        "POST",
        "-d",
        "one two three",
        "/v1/complete",
    ]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["receipt"]["units"], serde_json::json!([3, 0, 0, 0]));
    assert_eq!(v["receipt"]["amount"], "6");
    let o = run(&["--json", "pay", "--client", c, "/health"]);
    expect(&o, 0);
    assert_eq!(json(&o)["receipt"], serde_json::Value::Null);
    let o = run(&["--json", "pay", "--client", c, "/v1/flaky"]);
    expect(&o, 0);
    assert_eq!(json(&o)["status"], 500);
    // The third paid call: record 2; one call at a time, so all on lane 0.
    assert_eq!(json(&o)["receipt"]["index"], 2);
    assert_eq!(json(&o)["receipt"]["lane"], 0);
    assert_eq!(json(&o)["receipt"]["seq"], 2);
    for i in 0..3 {
        expect(&run(&["pay", "--client", c, &format!("/v1/items/{i}")]), 0);
    }
    // A URL under another host is a usage error of the client.
    expect(
        &run(&["pay", "--client", c, "-X", "BAD METHOD", "/v1/items/1"]),
        2,
    );

    // Nothing cosigned yet: prove refuses.
    let bundle = d.path().join("b.json");
    expect(
        &run(&["prove", "--client", c, "--index", "2", "-o", path(&bundle)]),
        2,
    );
    let o = run(&["--json", "checkpoint", "--client", c]);
    expect(&o, 0);
    assert_eq!(json(&o)["size"], 6);
    assert_eq!(json(&o)["cumulative"], "56");

    // verify against the live endpoints, the mirror and the chain (nothing claimed yet).
    let o = run(&["--json", "verify", "--client", c, "--rpc", &local.rpc]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["records"], 6);
    assert_eq!(v["mirror_size"], 6);
    assert_eq!(v["onchain"]["claimed_size"], 0);
    // A wrong RPC URL.
    let o = run(&["verify", "--client", c, "--rpc", "http://127.0.0.1:1"]);
    expect(&o, 2);

    // prove + dispute the failed call.
    expect(
        &run(&["prove", "--client", c, "--index", "2", "-o", path(&bundle)]),
        0,
    );
    expect(&run(&["verify-proof", path(&bundle)]), 0);
    // Not claimed onchain yet: the chain's root is not this checkpoint's.
    let o = run(&["verify-proof", path(&bundle), "--rpc", &local.rpc]);
    expect(&o, 1);
    assert!(
        stderr(&o).contains("claimed state is size 0"),
        "{}",
        stderr(&o)
    );
    // A record that was served fine is refused a refund.
    let ok_bundle = d.path().join("ok.json");
    expect(
        &run(&[
            "prove",
            "--client",
            c,
            "--index",
            "0",
            "-o",
            path(&ok_bundle),
        ]),
        0,
    );
    let o = run(&["dispute", "submit", path(&ok_bundle), "--client", c]);
    expect(&o, 1);
    assert!(stderr(&o).contains("dispute_refused"), "{}", stderr(&o));
    // The checkpoint holds the failed call's charge; nothing is claimed onchain, so the
    // credit may take the cumulative below it (the client gets the payee's signature over
    // the state after it, spec/HTTP.md §7).
    expect(&run(&["pay", "--client", c, "/v1/items/after"]), 0);
    expect(&run(&["pay", "--client", c, "/v1/items/after-2"]), 0);
    let o = run(&[
        "--json",
        "dispute",
        "submit",
        path(&bundle),
        "--client",
        c,
        "--provider",
        &url,
    ]);
    expect(&o, 0);
    assert_eq!(json(&o)["credit"], "-10");
    assert_eq!(json(&o)["disputed_index"], 2);
    // No [settlement] here: no payee signature came with the credit.
    assert_eq!(json(&o)["payee_cosigned_size"], serde_json::Value::Null);
    // Twice is refused.
    expect(
        &run(&["dispute", "submit", path(&bundle), "--client", c]),
        1,
    );
    // An unreachable provider.
    expect(
        &run(&[
            "dispute",
            "submit",
            path(&bundle),
            "--client",
            c,
            "--provider",
            "http://127.0.0.1:1",
        ]),
        2,
    );

    // A streamed completion, priced per input and output token from its usage event.
    let o = run(&[
        "--json",
        "pay",
        "--client",
        c,
        "-X",
        "POST",
        "-d",
        r#"{"messages":[{"role":"user","content":"hi there"}],"max_tokens":3}"#,
        tally_cli::mock_llm::PATH,
    ]);
    expect(&o, 0);
    let v = json(&o);
    let body = v["body"].as_str().unwrap();
    assert!(
        body.ends_with("data: [DONE]\n\n") && !body.contains("payment-response"),
        "{body}"
    );
    assert_eq!(v["receipt"]["units"], serde_json::json!([2, 3, 0, 0]));
    let price =
        2 * tally_cli::upstream::INPUT_TOKEN_PRICE + 3 * tally_cli::upstream::OUTPUT_TOKEN_PRICE;
    assert_eq!(v["receipt"]["amount"], price.to_string());

    // Stop the gateway, settle through the worker, and check everything against the chain.
    assert_eq!(serve.interrupt(), 0);
    let settle = || {
        let o = run(&[
            "--json",
            "settle",
            "--config",
            path(&config),
            "--payee-key",
            path(&payee_key),
        ]);
        expect(&o, 0);
        o
    };
    let v = json(&settle());
    assert!(v["gas_used"].as_u64().unwrap_or(0) > 21_000, "{v}");
    assert_eq!(v["channels"][0], channel.to_hex());
    // Nothing left to claim.
    let o = settle();
    assert_eq!(json(&o)["claimed"], serde_json::Value::Null);
    let o = run(&["--json", "verify-proof", path(&bundle), "--rpc", &local.rpc]);
    expect(&o, 0);
    assert_eq!(json(&o)["checked"], "onchain");
    // This gateway holds no payee key ([settlement] is not configured), so its credit came
    // without the payee's signature over the state after it: the watcher (which needs no
    // gateway) has nothing to post, and says so.
    let payer_key = d.path().join("payer.key");
    if let Err(e) = tally_cli::keys::write_secp256k1(&payer_key, &local.payer) {
        panic!("payer key: {e}");
    }
    let contract = local.contract.to_string();
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "--json", "channel", "watch", "--client", c, "--rpc", &local.rpc,
        ];
        args.extend(["--contract", &contract, "--payer-key", path(&payer_key)]);
        args.extend(extra);
        run(&args)
    };
    let o = watch(&["--once"]);
    expect(&o, 0);
    assert_eq!(json(&o)["answered"], false, "{}", stdout(&o));
    assert_eq!(json(&o)["reason"], "no_credit", "{}", stdout(&o));
    expect(&watch(&["--once", "--interval", "0"]), 2);
    let s = d.path().join("s.jsonl");
    expect(
        &run(&[
            "export",
            "--config",
            path(&config),
            "--channel",
            &channel.to_hex(),
            "-o",
            path(&s),
        ]),
        0,
    );
    let o = run(&[
        "--json",
        "verify",
        "--statement",
        path(&s),
        "--client",
        c,
        "--rpc",
        &local.rpc,
    ]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["onchain"]["claimed_size"], 6);
    assert_eq!(v["onchain"]["matches_checkpoint"], true);
    // The 6 checkpointed records, the 2 calls after the checkpoint, the credit and the
    // streamed completion.
    assert_eq!(v["records"], 6 + 2 + 1 + 1);
    assert_eq!(v["credited"], "10");
    // A config whose key file others can read is refused.
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(
        gw.join("provider.key"),
        std::fs::Permissions::from_mode(0o640),
    ) {
        panic!("chmod: {e}");
    }
    let o = run(&["serve", "--config", path(&config)]);
    expect(&o, 2);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    rt.block_on(upstream.stop());
    drop(local);
}
