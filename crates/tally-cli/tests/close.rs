//! The payee side of `tally serve` against a real anvil and the real contracts, with the
//! built binary: the settlement worker claiming by itself once a checkpoint crosses the
//! `[settlement]` threshold, the close endpoint (refusals that mark nothing, the idempotent
//! answer, the durable "closing" mark that refuses every later paid request, also after a
//! restart), `tally channel close` with the exact payout and refund, the empty-log close, and
//! the configuration outcomes: no `[settlement]` (`close_unavailable`, manual claims), a payee
//! key that is not `pay_to`, a payee key file others can read.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use common::*;
use tally_chain::eip712::{self, ChainCheckpoint};
use tally_chain::{ChannelFunding, TallyClient, WithdrawState};
use tally_cli::chain::LocalChain;
use tally_core::{ChannelId, Checkpoint, Hash};
use tally_http::api::CloseRequest;
use tally_http::payment::WireEip712Sig;
use tally_http::Amount;

const DEPOSIT: u128 = 1000;

/// One chain, one upstream, one gateway config and one client profile with an open channel.
struct Env {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    local: LocalChain,
    upstream: Option<tally_cli::upstream::Server>,
    reader: TallyClient,
    config: PathBuf,
    gw: PathBuf,
    client: PathBuf,
    payer_key: PathBuf,
    url: String,
    channel: ChannelId,
    checkpoint_key: PrivateKeySigner,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(u) = self.upstream.take() {
            self.rt.block_on(u.stop());
        }
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

impl Env {
    /// Everything but the gateway process; `settlement` is appended to the config as is.
    fn new(settlement: &str) -> Env {
        let rt = ok("runtime", tokio::runtime::Runtime::new());
        let dir = tmp();
        let note = |_: &str| {};
        let local = ok(
            "local chain (is anvil installed? bash tools/install.sh)",
            rt.block_on(tally_cli::chain::start_local(1_000_000, &note)),
        );
        let upstream = ok("upstream", rt.block_on(tally_cli::upstream::start()));
        let reader = ok(
            "reader",
            rt.block_on(tally_cli::chain::reader(&local.rpc, local.contract)),
        );
        let gw = dir.path().join("gw");
        expect(&run(&["keygen", "--provider", "--dir", path(&gw)]), 0);
        ok(
            "payee key",
            tally_cli::keys::write_secp256k1(&gw.join("payee.key"), &local.payee),
        );
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let config = gw.join("gateway.toml");
        let file = tally_cli::gateway::GatewayFile::new(
            &format!("127.0.0.1:{port}"),
            &upstream.url(),
            &local.rpc,
            local.chain_terms(31337),
            tally_cli::upstream::prices(),
        );
        let text = ok("gateway config", file.to_toml());
        write(&config, &format!("{text}\n{settlement}"));

        let client = dir.path().join("client");
        expect(&run(&["keygen", "--dir", path(&client)]), 0);
        let checkpoint_key = ok(
            "checkpoint key",
            tally_cli::keys::read_secp256k1(&client.join("checkpoint.key")),
        );
        let (channel, _) = ok(
            "open",
            rt.block_on(tally_cli::chain::open_channel(
                &local.rpc,
                local.contract,
                &local.payer,
                local.payee.address(),
                checkpoint_key.address(),
                tally_cli::chain::OpenTerms {
                    token: local.token,
                    deposit: DEPOSIT,
                    withdraw_delay: tally_cli::chain::DEFAULT_WITHDRAW_DELAY,
                    salt: tally_cli::chain::random_salt(),
                },
            )),
        );
        write(
            &client.join("client.toml"),
            &format!(
                "provider = \"{url}\"\nchannel_id = \"{}\"\nsession_key_file = \"session.key\"\ncheckpoint_key_file = \"checkpoint.key\"\n[chain]\nchain_id = 31337\ncontract = \"{}\"\n",
                channel.to_hex(),
                local.contract
            ),
        );
        let payer_key = dir.path().join("payer.key");
        ok(
            "payer key",
            tally_cli::keys::write_secp256k1(&payer_key, &local.payer),
        );
        Env {
            rt,
            dir,
            local,
            upstream: Some(upstream),
            reader,
            config,
            gw,
            client,
            payer_key,
            url,
            channel,
            checkpoint_key,
        }
    }

    fn onchain(&self) -> ChannelFunding {
        ok(
            "channel",
            self.rt.block_on(self.reader.channel(&self.channel)),
        )
    }

    fn balance(&self, who: Address) -> u128 {
        ok(
            "balance",
            self.rt
                .block_on(self.reader.token_balance(self.local.token, who)),
        )
    }

    fn pay(&self, item: u32) -> std::process::Output {
        run(&[
            "pay",
            "--client",
            path(&self.client),
            &format!("/v1/items/{item}"),
        ])
    }

    /// `GET /tally/v1/channels/{id}{tail}` as JSON.
    fn get(&self, tail: &str) -> serde_json::Value {
        let url = format!(
            "{}/tally/v1/channels/{}{tail}",
            self.url,
            self.channel.to_hex()
        );
        // Channel reads are the session key's (spec/HTTP.md §5.1).
        let session = ok(
            "session key",
            tally_cli::keys::read_ed25519(&self.client.join("session.key")),
        );
        let target = ok("url", reqwest::Url::parse(&url));
        let target = match target.query() {
            Some(q) => format!("{}?{q}", target.path()),
            None => target.path().to_string(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let token = tally_http::ReadToken::sign(&session, &self.channel, "GET", &target, now);
        self.rt.block_on(async {
            let resp = ok(
                "GET",
                reqwest::Client::new()
                    .get(&url)
                    .header(tally_http::read_auth::READ_AUTH, token.to_header())
                    .send()
                    .await,
            );
            assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
            let body = ok("body", resp.bytes().await);
            ok("JSON", serde_json::from_slice(&body))
        })
    }

    /// The gateway's (size, root, cumulative).
    fn head(&self) -> Checkpoint {
        let v = self.get("");
        checkpoint(
            self.channel,
            v["size"].as_u64().unwrap_or(u64::MAX),
            v["root"].as_str().unwrap_or_default(),
            v["cumulative"].as_str().unwrap_or_default(),
        )
    }

    fn domain(&self) -> alloy::sol_types::Eip712Domain {
        eip712::domain(31337, self.local.contract)
    }

    /// Posts a close request for `cp` with `sig` to `cp`'s channel; returns the status and
    /// the JSON answer.
    fn post_close(
        &self,
        cp: &Checkpoint,
        sig: &tally_chain::Eip712Sig,
    ) -> (u16, serde_json::Value) {
        let req = CloseRequest {
            size: cp.size,
            root: cp.root,
            cumulative: Amount(cp.cumulative),
            eip712: WireEip712Sig::from_parts(sig.parts()),
        };
        let url = format!(
            "{}/tally/v1/channels/{}/close",
            self.url,
            cp.channel_id.to_hex()
        );
        let body = ok("close JSON", serde_json::to_vec(&req));
        self.rt.block_on(async {
            let resp = ok(
                "POST close",
                reqwest::Client::new()
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await,
            );
            let status = resp.status().as_u16();
            let bytes = ok("body", resp.bytes().await);
            (
                status,
                ok("close answer JSON", serde_json::from_slice(&bytes)),
            )
        })
    }

    /// A close of `cp` signed by the channel's checkpoint key.
    fn signed_close(&self, cp: &Checkpoint) -> tally_chain::Eip712Sig {
        ok(
            "sign close",
            eip712::sign_close(&self.checkpoint_key, &self.domain(), cp),
        )
    }

    fn close_cli(&self) -> std::process::Output {
        run(&[
            "--json",
            "channel",
            "close",
            "--client",
            path(&self.client),
            "--payer-key",
            path(&self.payer_key),
            "--rpc",
            &self.local.rpc,
            "--contract",
            &self.local.contract.to_string(),
        ])
    }

    /// Waits (polling the chain, with a deadline) until `done` holds for the channel.
    fn wait_onchain(&self, what: &str, done: impl Fn(&ChannelFunding) -> bool) -> ChannelFunding {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let f = self.onchain();
            if done(&f) {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {f:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn checkpoint(channel: ChannelId, size: u64, root: &str, cumulative: &str) -> Checkpoint {
    Checkpoint {
        channel_id: channel,
        size,
        root: ok("root", Hash::from_hex(root)),
        cumulative: ok("cumulative", cumulative.parse()),
    }
}

fn reason(v: &serde_json::Value) -> &str {
    v["error"]["reason"].as_str().unwrap_or_default()
}

fn payee_sig(v: &serde_json::Value) -> tally_chain::Eip712Sig {
    let wire: WireEip712Sig = ok(
        "payee_eip712",
        serde_json::from_value(v["payee_eip712"].clone()),
    );
    tally_chain::Eip712Sig::from_parts(wire.parts())
}

fn refused_closed(o: &std::process::Output) {
    expect(o, 1);
    assert!(stderr(o).contains("channel_closed"), "{}", stderr(o));
}

#[test]
fn serve_claims_by_itself_then_closes_cooperatively() {
    let env = Env::new(
        "[settlement]\npayee_key_file = \"payee.key\"\nthreshold = \"30\"\npoll_interval_ms = 100\n",
    );
    let payee = env.local.payee.address();
    let serve = start_serve(&env.config);
    let startup = serve.startup.join("\n");
    assert!(
        startup.contains(&format!("claiming for {payee}")),
        "{startup}"
    );
    let secret = hex::encode(env.local.payee.to_bytes());
    assert!(!startup.to_lowercase().contains(&secret), "{startup}");

    // Six paid calls and a checkpoint: 60 ≥ the threshold of 30, so the worker claims it.
    for i in 0..6 {
        expect(&env.pay(i), 0);
    }
    let o = run(&["--json", "checkpoint", "--client", path(&env.client)]);
    expect(&o, 0);
    assert_eq!(json(&o)["cumulative"], "60");
    let f = env.wait_onchain("the worker's claim", |f| f.claimed_size == 6);
    // A claim moves no tokens: the 60 is owed, payable after the challenge window.
    assert_eq!((f.claimed, f.paid), (60, 0));
    assert_eq!(env.balance(payee), 0);
    for i in 6..8 {
        expect(&env.pay(i), 0);
    }

    // Refusals: each marks nothing.
    let head = env.head();
    assert_eq!((head.size, head.cumulative), (8, 80));
    let stale_root = env.get("/proofs/inclusion?index=0&size=6")["root"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stale = checkpoint(env.channel, 6, &stale_root, "60");
    let (status, v) = env.post_close(&stale, &env.signed_close(&stale));
    assert_eq!((status, reason(&v)), (409, "state_mismatch"), "{v}");
    assert_eq!(v["error"]["size"], 8);
    assert_eq!(v["error"]["cumulative"], "80");
    assert_eq!(v["error"]["root"], head.root.to_hex());
    let mut wrong_root = head;
    wrong_root.root = Hash([0x11; 32]);
    let (status, v) = env.post_close(&wrong_root, &env.signed_close(&wrong_root));
    assert_eq!((status, reason(&v)), (409, "state_mismatch"), "{v}");
    let mut less = head;
    less.cumulative = 70;
    let (_, v) = env.post_close(&less, &env.signed_close(&less));
    assert_eq!(reason(&v), "state_mismatch", "{v}");
    let stranger = PrivateKeySigner::random();
    let by_stranger = ok("sign", eip712::sign_close(&stranger, &env.domain(), &head));
    let (status, v) = env.post_close(&head, &by_stranger);
    assert_eq!((status, reason(&v)), (402, "invalid_signature"), "{v}");
    // The checkpoint key's *Checkpoint* signature is not a Close signature.
    let as_checkpoint = ok(
        "sign checkpoint",
        ChainCheckpoint::sign(&env.checkpoint_key, &env.domain(), head),
    );
    let (_, v) = env.post_close(&head, &as_checkpoint.sig);
    assert_eq!(reason(&v), "invalid_signature", "{v}");
    // Nothing was marked: the channel still takes paid calls.
    expect(&env.pay(8), 0);

    // The close at the final state: cosigned, durably marked, idempotent.
    let last = env.head();
    assert_eq!((last.size, last.cumulative), (9, 90));
    let signer_sig = env.signed_close(&last);
    let (status, first) = env.post_close(&last, &signer_sig);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["size"], 9);
    assert_eq!(first["cumulative"], "90");
    let payee_signature = payee_sig(&first);
    ok(
        "payee signature",
        eip712::verify_close(&payee_signature, &env.domain(), &last, payee),
    );
    let (status, again) = env.post_close(&last, &signer_sig);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    // Every later paid request is refused and records nothing, while the chain still
    // holds the channel open: the gateway's own mark refuses it.
    refused_closed(&env.pay(9));
    assert_eq!(env.head(), last);
    assert_eq!(env.onchain().withdraw, WithdrawState::None);
    // A close at another state is refused.
    let (_, v) = env.post_close(&head, &env.signed_close(&head));
    assert_eq!(reason(&v), "state_mismatch", "{v}");

    // The mark survives a restart, and so does the answer.
    assert_eq!(serve.interrupt(), 0);
    let serve = start_serve(&env.config);
    refused_closed(&env.pay(9));
    let (status, after_restart) = env.post_close(&last, &signer_sig);
    assert_eq!(status, 200, "{after_restart}");
    assert_eq!(after_restart, first);

    // `tally channel close`: the payee gets 90 − 0 already paid out (the claim's window has
    // not passed), the payer the rest.
    let (payee_before, payer_before) = (env.balance(payee), env.balance(env.local.payer.address()));
    let o = env.close_cli();
    expect(&o, 0);
    let v = json(&o);
    assert_eq!(v["paid"], "90", "{v}");
    assert_eq!(v["refund"], (DEPOSIT - 90).to_string(), "{v}");
    assert!(
        v["tx"]["transaction"]
            .as_str()
            .unwrap_or_default()
            .starts_with("0x"),
        "{v}"
    );
    assert_eq!(env.balance(payee), payee_before + 90);
    assert_eq!(
        env.balance(env.local.payer.address()),
        payer_before + DEPOSIT - 90
    );
    let f = env.onchain();
    assert_eq!(f.withdraw, WithdrawState::Closed);
    assert_eq!(
        (f.claimed, f.claimed_size, f.claimed_root),
        (90, 9, last.root)
    );
    refused_closed(&env.pay(9));
    // Closed: a second close is a usage error.
    expect(&env.close_cli(), 2);

    // `tally settle` takes the payee key from [settlement]; nothing is left to claim.
    assert_eq!(serve.interrupt(), 0);
    let o = run(&["--json", "settle", "--config", path(&env.config)]);
    expect(&o, 0);
    assert_eq!(json(&o)["claimed"], serde_json::Value::Null);
}

#[test]
fn close_unavailable_without_settlement_startup_refusals_and_the_empty_close() {
    let env = Env::new("");
    let serve = start_serve(&env.config);
    let startup = serve.startup.join("\n");
    assert!(
        startup.contains("claims are manual (`tally settle`)"),
        "{startup}"
    );
    // A channel nobody bound a session key to has no readable state; its log is empty.
    let empty = Checkpoint {
        channel_id: env.channel,
        size: 0,
        root: tally_core::hash::blake3_of(&[]),
        cumulative: 0,
    };
    let (status, v) = env.post_close(&empty, &env.signed_close(&empty));
    assert_eq!((status, reason(&v)), (501, "close_unavailable"), "{v}");
    let o = env.close_cli();
    expect(&o, 1);
    assert!(stderr(&o).contains("close_unavailable"), "{}", stderr(&o));
    assert_eq!(env.onchain().withdraw, WithdrawState::None);
    assert_eq!(serve.interrupt(), 0);
    // Without [settlement], `tally settle` needs --payee-key.
    let o = run(&["settle", "--config", path(&env.config)]);
    expect(&o, 2);
    assert!(stderr(&o).contains("--payee-key"), "{}", stderr(&o));

    let base = read(&env.config);
    let with_key = |file: &Path| {
        write(
            &env.config,
            &format!(
                "{base}\n[settlement]\npayee_key_file = \"{}\"\npoll_interval_ms = 100\n",
                path(file)
            ),
        );
    };
    // A payee key that is not chain.pay_to: refused at start-up.
    let wrong = env.dir.path().join("wrong.key");
    ok(
        "wrong key",
        tally_cli::keys::write_secp256k1(&wrong, &env.local.payer),
    );
    with_key(&wrong);
    let o = run(&["serve", "--config", path(&env.config)]);
    expect(&o, 2);
    assert!(
        stderr(&o).contains(&format!("{}", env.local.payer.address()))
            && stderr(&o).contains("pay_to"),
        "{}",
        stderr(&o)
    );
    // A payee key file others can read: refused.
    let payee_key = env.gw.join("payee.key");
    use std::os::unix::fs::PermissionsExt;
    ok(
        "chmod",
        std::fs::set_permissions(&payee_key, std::fs::Permissions::from_mode(0o644)),
    );
    with_key(&payee_key);
    let o = run(&["serve", "--config", path(&env.config)]);
    expect(&o, 2);
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    ok(
        "chmod",
        std::fs::set_permissions(&payee_key, std::fs::Permissions::from_mode(0o600)),
    );

    // With the payee key, an empty channel closes at size 0: the payer gets it all back.
    let _serve = start_serve(&env.config);
    let payer = env.local.payer.address();
    let before = env.balance(payer);
    let o = env.close_cli();
    expect(&o, 0);
    let v = json(&o);
    let refund = DEPOSIT.to_string();
    assert_eq!(
        (v["paid"].as_str(), v["refund"].as_str()),
        (Some("0"), Some(refund.as_str())),
        "{v}"
    );
    assert_eq!(env.balance(payer), before + DEPOSIT);
    assert_eq!(env.balance(env.local.payee.address()), 0);
    let f = env.onchain();
    assert_eq!(f.withdraw, WithdrawState::Closed);
    assert_eq!((f.claimed_size, f.claimed_root), (0, empty.root));

    // A channel that pays someone else gets no payee signature, however well it is signed.
    let (other, _) = ok(
        "open",
        env.rt.block_on(tally_cli::chain::open_channel(
            &env.local.rpc,
            env.local.contract,
            &env.local.payer,
            env.local.payer.address(),
            env.checkpoint_key.address(),
            tally_cli::chain::OpenTerms {
                token: env.local.token,
                deposit: 10,
                withdraw_delay: tally_cli::chain::DEFAULT_WITHDRAW_DELAY,
                salt: tally_cli::chain::random_salt(),
            },
        )),
    );
    let elsewhere = Checkpoint {
        channel_id: other,
        ..empty
    };
    let (status, v) = env.post_close(&elsewhere, &env.signed_close(&elsewhere));
    assert_eq!((status, reason(&v)), (402, "unknown_channel"), "{v}");
}

#[test]
fn close_help_lists_exit_codes() {
    let o = run(&["channel", "close", "--help"]);
    expect(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("Exit codes: 0 ok; 1"), "{text}");
    for flag in ["--client", "--payer-key", "--rpc", "--contract"] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
}

/// `tally pay` after the gateway restarted with a higher price: refused (exit 1, nothing
/// signed or recorded) with what went up listed, until `--accept-terms`; the accepted terms
/// are then pinned, and a lower price is adopted without asking (spec/HTTP.md §4.4).
#[test]
fn pay_refuses_raised_terms_until_accept_terms() {
    let env = Env::new("");
    let pay_json = |extra: &[&str]| {
        let mut args = vec!["--json", "pay", "--client", path(&env.client)];
        args.extend_from_slice(extra);
        args.push("/v1/items/1");
        run(&args)
    };
    let reprice = |from: &str, to: &str| {
        let text = read(&env.config);
        let changed = text.replace(
            &format!("amount = \"{from}\""),
            &format!("amount = \"{to}\""),
        );
        assert_ne!(changed, text, "no fixed price {from} in the config");
        write(&env.config, &changed);
    };
    let serve = start_serve(&env.config);
    let o = pay_json(&[]);
    expect(&o, 0);
    assert_eq!(json(&o)["receipt"]["amount"], "10");
    assert_eq!(serve.interrupt(), 0);

    reprice("10", "25");
    let serve = start_serve(&env.config);
    let o = pay_json(&[]);
    expect(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("GET /v1/items: fixed 10 -> fixed 25"), "{err}");
    assert!(err.contains("--accept-terms"), "{err}");
    assert_eq!(env.head().size, 1, "nothing was paid");

    let o = pay_json(&["--accept-terms"]);
    expect(&o, 0);
    assert_eq!(json(&o)["receipt"]["amount"], "25");
    let o = pay_json(&[]);
    expect(&o, 0);
    assert_eq!(
        json(&o)["receipt"]["amount"],
        "25",
        "accepted terms stay accepted"
    );
    assert_eq!(serve.interrupt(), 0);

    reprice("25", "5");
    let _serve = start_serve(&env.config);
    let o = pay_json(&[]);
    expect(&o, 0);
    assert_eq!(
        json(&o)["receipt"]["amount"],
        "5",
        "a lower price needs no opt-in"
    );
}
