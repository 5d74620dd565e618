//! The CLI's commands on the artifacts of a real demo run (`tally demo --keep`): verify,
//! prove, verify-proof, export, fsck and keygen, with wrong inputs and exit codes.

mod common;

use common::*;

#[test]
fn demo_summary_reports_calls_settlement_audit_and_credit() {
    let k = kept();
    let s = &k.summary;
    assert_eq!(s["calls"], KEPT_CALLS);
    assert_eq!(s["checkpoint_size"], KEPT_CALLS);
    assert_eq!(s["failed_calls"], 1);
    assert_eq!(s["audit_discrepancies"], 0);
    assert_eq!(s["credit"], "-10");
    assert_eq!(s["credit_rule"], "server_error");
    assert!(s["claim_gas"].as_u64().unwrap_or(0) > 21_000, "{s}");
    // The payout after the claim's window is measured and shown too.
    let payout = s["payout_gas"].as_u64().unwrap_or(0);
    assert!(payout > 21_000, "{s}");
    assert!(s["payout_transaction"]
        .as_str()
        .is_some_and(|t| t.starts_with("0x")));
    let claim = s["claim_gas"].as_u64().unwrap_or(0);
    let per_call = s["settle_gas_per_call"].as_f64().unwrap_or(0.0);
    assert!(
        (per_call - (claim + payout) as f64 / KEPT_CALLS as f64).abs() < 1e-6,
        "{s}"
    );
    // The comparison counts the channel's whole life (GAS.md, "whole channel, unilateral
    // exit"): open, both claims, both payouts, initiateWithdraw and finalizeWithdraw, over
    // every paid call of the channel (every record but the credit).
    let gas = |k: &str| {
        let g = s[k].as_u64().unwrap_or(0);
        assert!(g > 21_000, "{k}: {s}");
        g
    };
    let whole = gas("open_gas")
        + claim
        + payout
        + gas("withdraw_gas")
        + gas("final_claim_gas")
        + gas("final_payout_gas")
        + gas("finalize_gas");
    assert_eq!(s["channel_gas"].as_u64(), Some(whole), "{s}");
    let final_size = s["final_size"].as_u64().unwrap_or(0);
    assert!(final_size > KEPT_CALLS, "{s}");
    let calls = final_size - 1;
    assert_eq!(s["channel_calls"], calls);
    let per_call = s["channel_gas_per_call"].as_f64().unwrap_or(0.0);
    assert!((per_call - whole as f64 / calls as f64).abs() < 1e-6, "{s}");
    assert_eq!(s["one_per_call_transactions"], calls);
    // The per-call alternative is measured: one real transfer's gas, times the calls.
    let transfer = s["per_call_transfer_gas"].as_u64().unwrap_or(0);
    assert!(transfer > 21_000, "{s}");
    assert_eq!(s["one_per_call_gas"].as_u64(), Some(transfer * calls));
    let ratio = s["one_per_call_ratio"].as_f64().unwrap_or(0.0);
    assert!(
        (ratio - (transfer * calls) as f64 / whole as f64).abs() < 1e-6,
        "{s}"
    );
    // The exit paid the final cumulative and refunded the rest of the deposit.
    let amount = |k: &str| s[k].as_str().unwrap_or("x").parse::<u128>().unwrap_or(0);
    assert_eq!(
        amount("paid_onchain") + amount("refund"),
        tally_cli::demo::DEPOSIT
    );
    assert!(s["per_call_transfer_transaction"]
        .as_str()
        .is_some_and(|t| t.starts_with("0x")));
    let charged: u128 = s["charged"].as_str().unwrap_or("0").parse().unwrap_or(0);
    let net: u128 = s["net_after_dispute"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert_eq!(
        charged,
        s["claimed_onchain"]
            .as_str()
            .unwrap_or("x")
            .parse()
            .unwrap_or(0)
    );
    let after: u128 = s["charged_after_claim"]
        .as_str()
        .unwrap_or("x")
        .parse()
        .unwrap_or(0);
    // The credit nets against the calls made after the claim, which cover it.
    assert!(s["calls_after_claim"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(after >= 10, "{s}");
    assert_eq!(net + 10, charged + after);
    // Streamed completions, paid per input and output token (the mock streams 12, 16 and 8
    // tokens).
    let streamed = &s["streamed"];
    assert_eq!(streamed["completions"], 3);
    assert_eq!(streamed["output_tokens"], 12 + 16 + 8);
    let (input, output) = (
        streamed["input_tokens"].as_u64().unwrap_or(0) as u128,
        streamed["output_tokens"].as_u64().unwrap_or(0) as u128,
    );
    assert!(input > 0, "{s}");
    assert_eq!(
        streamed["charged"].as_str(),
        Some(
            (input * tally_cli::upstream::INPUT_TOKEN_PRICE
                + output * tally_cli::upstream::OUTPUT_TOKEN_PRICE)
                .to_string()
                .as_str()
        )
    );
    for f in [
        "statement.jsonl",
        "bundle.json",
        "client/client.toml",
        "gateway/gateway.toml",
    ] {
        assert!(k.dir.join(f).is_file(), "{f} not kept");
    }
}

#[test]
fn help_on_every_command_documents_exit_codes() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["keygen", "--help"],
        vec!["serve", "--help"],
        vec!["pay", "--help"],
        vec!["checkpoint", "--help"],
        vec!["verify", "--help"],
        vec!["prove", "--help"],
        vec!["verify-proof", "--help"],
        vec!["dispute", "--help"],
        vec!["dispute", "submit", "--help"],
        vec!["settle", "--help"],
        vec!["export", "--help"],
        vec!["fsck", "--help"],
        vec!["db", "--help"],
        vec!["db", "init", "--help"],
    ] {
        let o = run(&args);
        expect(&o, 0);
        if args.len() > 1 && args[0] != "dispute" || args == ["dispute", "submit", "--help"] {
            assert!(
                stdout(&o).contains("Exit codes: 0 ok; 1 verification failed"),
                "{args:?}: {}",
                stdout(&o)
            );
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    expect(&run(&["no-such-command"]), 2);
    expect(&run(&["prove"]), 2);
    let o = run(&["verify"]);
    expect(&o, 2);
    assert!(stderr(&o).contains("--statement"), "{}", stderr(&o));
    expect(&run(&["demo", "--calls", "2"]), 2);
}

#[test]
fn verify_accepts_the_demo_statement() {
    let k = kept();
    let st = k.dir.join("statement.jsonl");
    let o = run(&["--json", "verify", "--statement", path(&st)]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["discrepancies"].as_array().map(Vec::len), Some(0), "{v}");
    // 60 calls, those after the claim and the dispute's credit record.
    assert_eq!(v["records"], kept_log_size());
    assert_eq!(v["credited"], "10");
    assert_eq!(v["prices_checked"], true);
    assert!(v["checkpoints"].as_u64().unwrap_or(0) >= 1);
    // Human form too.
    let o = run(&["verify", "--statement", path(&st)]);
    expect(&o, 0);
    assert!(
        stdout(&o).contains("VERIFIED: no discrepancies"),
        "{}",
        stdout(&o)
    );
}

fn discrepancies(o: &std::process::Output) -> Vec<(Option<u64>, String, String)> {
    json(o)["discrepancies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["index"].as_u64(),
                        d["kind"].as_str().unwrap_or_default().to_string(),
                        d["detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn verify_names_a_forged_provider_signature_exactly() {
    let k = kept();
    let d = tmp();
    let bad = d.path().join("bad.jsonl");
    // Record 7 is line 8.
    tamper(&k.dir.join("statement.jsonl"), &bad, 8, |v| {
        let sig = v["provider_signature"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (head, rest) = sig.split_at(1);
        let flipped = format!("{}{rest}", if head == "0" { "1" } else { "0" });
        v["provider_signature"] = serde_json::Value::String(flipped);
    });
    let o = run(&["--json", "verify", "--statement", path(&bad)]);
    expect(&o, 1);
    let found = discrepancies(&o);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(7));
    assert_eq!(found[0].1, "provider_signature");
    // The human report names it too.
    let o = run(&["verify", "--statement", path(&bad)]);
    expect(&o, 1);
    assert!(
        stdout(&o).contains("record 7: [provider_signature]"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn verify_names_a_changed_amount_exactly() {
    let k = kept();
    let d = tmp();
    let bad = d.path().join("bad.jsonl");
    // The outcome's amount (i128 LE) starts at byte 13 + 1 + 181 + 64 + 117 = 376 of the
    // record (spec/PROTOCOL.md §5.2–5.3): lower record 4's charge (10) by one.
    tamper(&k.dir.join("statement.jsonl"), &bad, 5, |v| {
        edit_record(v, |bytes| bytes[376] = bytes[376].wrapping_sub(1));
    });
    let o = run(&["--json", "verify", "--statement", path(&bad)]);
    expect(&o, 1);
    let found = discrepancies(&o);
    let at4: Vec<_> = found.iter().filter(|d| d.0 == Some(4)).collect();
    assert!(
        at4.iter()
            .any(|d| d.1 == "cumulative" && d.2.contains("cumulative")),
        "{found:?}"
    );
    assert!(at4.iter().any(|d| d.1 == "provider_signature"), "{found:?}");
    assert!(at4.iter().any(|d| d.1 == "price"), "{found:?}");
    // Later records acknowledged the true log, which the tampered leaf no longer gives: the
    // first such acknowledgement is named once, with the count of later ones (the demo's
    // calls run on several lanes, so which record comes first depends on the run).
    let acks: Vec<_> = found.iter().filter(|d| d.1 == "acknowledgement").collect();
    assert_eq!(acks.len(), 1, "{found:?}");
    assert!(acks[0].0.is_some_and(|i| i > 4), "{found:?}");
    assert!(
        found.iter().all(|d| d.0 == Some(4) || d.1 != "price"),
        "{found:?}"
    );
    // And the checkpoints no longer match the recomputed roots.
    assert!(found.iter().any(|d| d.1 == "checkpoint"), "{found:?}");
}

#[test]
fn verify_refuses_missing_and_garbage_files() {
    let d = tmp();
    let o = run(&["verify", "--statement", path(&d.path().join("nope.jsonl"))]);
    expect(&o, 2);
    assert!(stderr(&o).contains("nope.jsonl"), "{}", stderr(&o));
    let junk = d.path().join("junk.jsonl");
    write(&junk, "this is not a statement\n");
    let o = run(&["verify", "--statement", path(&junk)]);
    expect(&o, 2);
    assert!(stderr(&o).contains("not a statement"), "{}", stderr(&o));
}

#[test]
fn verify_with_an_unreachable_rpc_exits_2() {
    let k = kept();
    let st = k.dir.join("statement.jsonl");
    let o = run(&[
        "verify",
        "--statement",
        path(&st),
        "--rpc",
        "http://127.0.0.1:1",
    ]);
    expect(&o, 2);
    assert!(stderr(&o).contains("chain"), "{}", stderr(&o));
}

#[test]
fn verify_proof_accepts_the_demo_bundle_offline() {
    let k = kept();
    let o = run(&["--json", "verify-proof", path(&k.dir.join("bundle.json"))]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["checked"], "offline");
    // The failed call is the middle one sent; calls run concurrently, so its record is near,
    // not necessarily at, the middle of the log.
    let index = v["index"].as_u64().unwrap_or(u64::MAX);
    assert!(index < KEPT_CALLS, "{v}");
    assert_eq!(v["amount"], "10");
}

#[test]
fn verify_proof_refuses_corrupted_bundles() {
    let k = kept();
    let d = tmp();
    let text = read(&k.dir.join("bundle.json"));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    // A wrong sibling hash.
    let mut proof = v.clone();
    if let Some(first) = proof["inclusion_proof"].get_mut(0) {
        *first = serde_json::Value::String("00".repeat(32));
    }
    let p = d.path().join("proof.json");
    write(&p, &proof.to_string());
    let o = run(&["verify-proof", path(&p)]);
    expect(&o, 1);
    assert!(stderr(&o).contains("inclusion proof"), "{}", stderr(&o));
    // Another index than the record's.
    v["index"] = serde_json::json!(0);
    let p = d.path().join("index.json");
    write(&p, &v.to_string());
    let o = run(&["verify-proof", path(&p)]);
    expect(&o, 1);
    assert!(stderr(&o).contains("index"), "{}", stderr(&o));
    // Truncated JSON, unknown field.
    let p = d.path().join("trunc.json");
    write(&p, &text[..text.len() / 2]);
    expect(&run(&["verify-proof", path(&p)]), 1);
    let p = d.path().join("extra.json");
    write(&p, &text.replacen('{', "{\"extra\":1,", 1));
    expect(&run(&["verify-proof", path(&p)]), 1);
    // Missing file.
    expect(
        &run(&["verify-proof", path(&d.path().join("none.json"))]),
        2,
    );
}

#[test]
fn verify_proof_with_a_wrong_rpc_url_exits_2() {
    let k = kept();
    let o = run(&[
        "verify-proof",
        path(&k.dir.join("bundle.json")),
        "--rpc",
        "http://127.0.0.1:1",
    ]);
    expect(&o, 2);
    let o = run(&[
        "verify-proof",
        path(&k.dir.join("bundle.json")),
        "--rpc",
        "not a url",
    ]);
    expect(&o, 2);
}

#[test]
fn prove_from_the_mirror_then_verify() {
    let k = kept();
    let d = tmp();
    let client = d.path().join("client");
    copy_dir(&k.dir.join("client"), &client);
    let b = d.path().join("b3.json");
    let o = run(&[
        "prove",
        "--client",
        path(&client),
        "--index",
        "3",
        "-o",
        path(&b),
    ]);
    expect(&o, 0);
    let o = run(&["--json", "verify-proof", path(&b)]);
    expect(&o, 0);
    assert_eq!(json(&o)["index"], 3);
    // Beyond the latest cosigned checkpoint.
    let o = run(&["prove", "--client", path(&client), "--index", "100000"]);
    expect(&o, 2);
    assert!(stderr(&o).contains("not covered"), "{}", stderr(&o));
    // No such profile.
    expect(
        &run(&[
            "prove",
            "--client",
            path(&d.path().join("none")),
            "--index",
            "0",
        ]),
        2,
    );
}

#[test]
fn key_files_readable_by_others_are_refused() {
    let k = kept();
    let d = tmp();
    let client = d.path().join("client");
    copy_dir(&k.dir.join("client"), &client);
    use std::os::unix::fs::PermissionsExt;
    let key = client.join("session.key");
    if let Err(e) = std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)) {
        panic!("chmod: {e}");
    }
    let o = run(&["prove", "--client", path(&client), "--index", "0"]);
    expect(&o, 2);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains(read(&key).trim()),
        "the secret was printed"
    );
}

#[test]
fn keygen_writes_0600_files_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let d = tmp();
    let o = run(&["--json", "keygen", "--dir", path(d.path())]);
    expect(&o, 0);
    let v = json(&o);
    for f in ["session.key", "checkpoint.key"] {
        let p = d.path().join(f);
        let mode = std::fs::metadata(&p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600, "{f}");
        assert!(
            !stdout(&o).contains(read(&p).trim()),
            "{f}'s secret was printed"
        );
    }
    assert!(v["checkpoint_signer"]
        .as_str()
        .unwrap_or_default()
        .starts_with("0x"));
    expect(&run(&["keygen", "--dir", path(d.path())]), 2);
    let o = run(&["keygen", "--dir", path(d.path()), "--provider"]);
    expect(&o, 0);
    expect(&run(&["keygen", "--dir", path(d.path()), "--provider"]), 2);
}

#[test]
fn fsck_checks_the_gateway_store_and_the_mirror() {
    let k = kept();
    let d = tmp();
    let g = d.path().join("gw");
    copy_dir(&k.dir.join("gateway").join("data").join("log"), &g);
    let o = run(&["--json", "fsck", path(&g)]);
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["channels"][0]["ok"], true, "{v}");
    assert_eq!(v["channels"][0]["size"], kept_log_size());
    let m = d.path().join("mirror");
    copy_dir(&k.dir.join("client").join("mirror").join("log"), &m);
    expect(&run(&["fsck", path(&m)]), 0);
    expect(&run(&["fsck", path(&d.path().join("none"))]), 2);
}

#[test]
fn export_from_the_gateway_and_the_mirror_verifies() {
    let k = kept();
    let d = tmp();
    let gw = d.path().join("gateway");
    copy_dir(&k.dir.join("gateway"), &gw);
    let channel = k.dir.join("client").join("client.toml");
    let profile: toml::Value = toml::from_str(&read(&channel)).unwrap_or(toml::Value::Integer(0));
    let id = profile["channel_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let s = d.path().join("s.jsonl");
    let o = run(&[
        "export",
        "--config",
        path(&gw.join("gateway.toml")),
        "--channel",
        &id,
        "-o",
        path(&s),
    ]);
    expect(&o, 0);
    let o = run(&["--json", "verify", "--statement", path(&s)]);
    expect(&o, 0);
    assert_eq!(json(&o)["records"], kept_log_size());
    // The same statement as the provider's endpoints served.
    assert!(
        read(&s) == read(&k.dir.join("statement.jsonl")),
        "export and endpoints differ"
    );
    let client = d.path().join("client");
    copy_dir(&k.dir.join("client"), &client);
    let m = d.path().join("m.jsonl");
    expect(
        &run(&["export", "--client", path(&client), "-o", path(&m)]),
        0,
    );
    let o = run(&[
        "--json",
        "verify",
        "--statement",
        path(&m),
        "--client",
        path(&client),
    ]);
    expect(&o, 0);
    assert_eq!(json(&o)["mirror_size"], kept_log_size());
    expect(&run(&["export", "-o", path(&m)]), 2);
}

#[test]
fn demo_without_anvil_fails() {
    let o = match tally()
        .args(["demo", "--calls", "10"])
        .env("TALLY_ANVIL", "/nonexistent/anvil")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    expect(&o, 2);
    assert!(stderr(&o).contains("anvil not found"), "{}", stderr(&o));
}

#[test]
fn the_example_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tally.example.toml");
    if let Err(e) = tally_server::config::GatewayConfig::load(std::path::Path::new(path)) {
        panic!("{path}: {e}");
    }
}

/// The help of `--withdraw-delay` is built from tally-chain's constants: the contract's
/// bounds and the gateway's default policy (six hours), never a stale literal.
#[test]
fn withdraw_delay_help_names_the_gateway_default() {
    let o = run(&["channel", "open", "--help"]);
    expect(&o, 0);
    let help = stdout(&o);
    let min = tally_chain::DEFAULT_MIN_WITHDRAW_DELAY.to_string();
    assert!(help.contains(&format!("by default {min}")), "{help}");
    assert!(help.contains("3600 to 2592000"), "{help}");
}
