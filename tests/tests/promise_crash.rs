//! Promise mode under real crashes (DESIGN.md §8, spec/HTTP.md §5.6): the standalone gateway
//! runs with `durability = { mode = "promise" }` as a separate OS process, funded from a real
//! anvil, and is SIGKILLed at random moments under load from several clients, each with
//! requests in flight on several lanes. After each restart the clients that come back
//! restore what they hold; one client per cycle never comes back.
//!
//! At the end: every receipt a returning client holds is in the provider's log byte for byte
//! unless the client disowned it in a signed restore statement (a receipt behind a gap no one
//! could fill); no request is charged twice; each mirror is the provider's log. Per vanished
//! client, what the provider lost (receipts beyond its durable head) is counted and bounded by
//! `max_pending`, and its channel refuses appends (`restore_required`) while the others are
//! served.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tally_client::Client;
use tally_core::encoding::Canonical;
use tally_core::{Record, Restore, SecretKey};
use tally_e2e::chain::ChainEnv;
use tally_e2e::process::{free_port, GatewayProcess};
use tally_e2e::traffic::{call, channel_state, traffic};
use tally_e2e::*;
use tally_http::Reason;
use tally_server::durability::DurabilityConfig;

const CLIENTS: usize = 3;
const CRASHES: usize = 6;
const IN_FLIGHT: usize = 4;
const MAX_PENDING: u64 = 4096;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn write_config(dir: &Path, port: u16, upstream: &str, env: &ChainEnv) -> PathBuf {
    let mut file = env.gateway_file(port, upstream);
    file.durability = Some(DurabilityConfig::Table {
        mode: "promise".into(),
        max_delay_ms: 5,
        max_pending: MAX_PENDING,
    });
    let path = dir.join("gateway.toml");
    ok("writing the config", file.write(&path));
    path
}

/// The restore statements the provider kept for `ch`, each checked under the session key.
fn restores(bindings: &tally_server::bindings::Bindings, ch: &TestChannel) -> Vec<Restore> {
    ok("kept restores", bindings.restores(&ch.id))
        .into_iter()
        .map(|(bytes, sig)| {
            let r = ok("kept statement", Restore::from_bytes(&bytes));
            ok("statement signature", r.verify(&ch.session.public(), &sig));
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_promise_gateway_restores_every_receipt_its_clients_hold() {
    let started = Instant::now();
    let run = async {
        let mut env = ChainEnv::new().await;
        let upstream = spawn_upstream().await;
        let gdir = tmp();
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        ok(
            "key file",
            tally_server::config::write_key_file(&gdir.path().join("provider.key"), &key),
        );
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let config = write_config(gdir.path(), port, &upstream.url(), &env);
        let mut gateway = GatewayProcess::new(
            env!("CARGO_BIN_EXE_tally-e2e-gateway"),
            config,
            gdir.path().join("gateway.log"),
            url.clone(),
        );
        gateway.start().await;

        let mut channels = Vec::new();
        for _ in 0..CLIENTS {
            channels.push((env.open(1_000_000_000).await, tmp()));
        }
        let mut clients = Vec::new();
        for (ch, dir) in &channels {
            clients.push(ok(
                "connect",
                Client::connect(client_config(&url, dir.path(), ch)).await,
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| tokio::spawn(traffic(client, c, IN_FLIGHT, stop.clone())))
            .collect();

        let mut lost = Vec::new();
        for cycle in 0..CRASHES {
            // A client that pays in this cycle only and never comes back.
            let vch = env.open(1_000_000_000).await;
            let vdir = tmp();
            let vanisher = ok(
                "connect",
                Client::connect(client_config(&url, vdir.path(), &vch)).await,
            );
            let vstop = Arc::new(AtomicBool::new(false));
            let vtask = tokio::spawn(traffic(vanisher, 100 + cycle, IN_FLIGHT, vstop.clone()));
            let run_for = rand::thread_rng().gen_range(150..600);
            tokio::time::sleep(Duration::from_millis(run_for)).await;
            gateway.crash();
            vstop.store(true, Ordering::Relaxed);
            let (vanisher, vseen) = ok("vanisher", vtask.await);
            drop(vanisher);
            let down = rand::thread_rng().gen_range(0..200);
            tokio::time::sleep(Duration::from_millis(down)).await;
            gateway.start().await;

            // The vanished client's channel: restore_required, nothing appended; what the
            // provider lost is what the client holds beyond the durable head.
            let state = channel_state(&url, &vch).await;
            let beyond = vseen
                .receipts
                .iter()
                .filter(|r| r.outcome.index >= state.size)
                .count() as u64;
            assert!(beyond <= MAX_PENDING, "cycle {cycle}: {beyond} lost");
            lost.push(beyond);
            assert!(
                state.restore_required || vseen.receipts.is_empty(),
                "cycle {cycle}: a channel that took promises is open after a crash"
            );
            if state.restore_required {
                let auth = tally_core::Authorization {
                    version: tally_core::VERSION,
                    channel_id: vch.id,
                    lane: 0,
                    seq: 0,
                    request_hash: tally_core::hash::blake3_of(&[b"late"]),
                    max_amount: ECHO_PRICE,
                    ack_size: 0,
                    ack_root: tally_core::hash::blake3_of(&[]),
                    ack_cumulative: 0,
                    terms_hash: tally_core::hash::blake3_of(&[]),
                };
                let (status, _, body) = raw(&url, "/v1/echo", b"late", &auth, &vch.session).await;
                assert_eq!(status, 409, "cycle {cycle}");
                assert!(matches!(reason(&body), Reason::RestoreRequired { .. }));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut paying = Vec::new();
        for w in workers {
            paying.push(ok("traffic task", w.await));
        }
        for (c, ((client, seen), (ch, _))) in paying.iter_mut().zip(&channels).enumerate() {
            ok(
                "final call",
                call(client, "/v1/echo", &format!("final {c}"), seen).await,
            );
            ok("flush", client.flush().await);
            let (size, root, cumulative) = client.mirror_head().await;
            let state = channel_state(&url, ch).await;
            assert_eq!(
                (state.size, state.root, state.cumulative.0),
                (size, root, cumulative),
                "client {c}: provider and mirror disagree"
            );
        }

        gateway.crash();
        let store = ok(
            "opening the provider's log",
            tally_log::LogStore::open(gdir.path().join("data").join("log")),
        );
        let bindings = ok(
            "opening the provider's bindings",
            tally_server::bindings::Bindings::open(&gdir.path().join("data").join("bindings")),
        );
        let mut disowned = 0usize;
        let mut receipts = 0usize;
        let (mut restored, mut uploaded) = (0usize, 0u64);
        for (c, ((client, seen), (ch, dir))) in paying.into_iter().zip(&channels).enumerate() {
            let (size, root, _) = client.mirror_head().await;
            drop(client);
            let log = checked_log(&store, &ch.id, &ch.session.public());
            let head = ok("head", store.head(&ch.id).ok_or("no log"));
            assert_eq!((head.size, head.root), (size, root), "client {c}");
            // One node on sled: nothing is ever unavailable (traffic::call files a 503 as
            // retryable for the cluster tests).
            assert_eq!(seen.unavailable, 0, "client {c} was answered 503");
            let mirror = open_mirror(dir.path(), ch).await;
            let mut hashes = HashSet::new();
            for (i, record) in log.iter().enumerate() {
                assert_eq!(ok("mirror record", mirror.record(i as u64)), *record);
                assert!(
                    seen.sent.contains(&record.authorization.request_hash.0),
                    "client {c}: record {i} is for a request never sent"
                );
                assert!(
                    hashes.insert(record.authorization.request_hash.0),
                    "client {c}: request of record {i} charged twice"
                );
            }
            let kept = restores(&bindings, ch);
            restored += kept.len();
            uploaded += kept.iter().map(|r| r.size - r.base_size).sum::<u64>();
            let statements: Vec<u64> = kept.iter().filter(|r| r.complete).map(|r| r.size).collect();
            for r in &seen.receipts {
                let index = r.outcome.index;
                let held = log
                    .get(index as usize)
                    .is_some_and(|rec: &Record| rec.outcome == r.outcome);
                if held {
                    assert_eq!(key.sign(&r.outcome.to_bytes()), r.signature);
                    continue;
                }
                // Not in the log: only a receipt the client disowned, in a signed restore
                // statement ending at or before it, may be missing.
                assert!(
                    statements.iter().any(|&s| s <= index),
                    "client {c}: receipt {index} is neither in the log nor disowned"
                );
                disowned += 1;
            }
            receipts += seen.receipts.len();
        }
        eprintln!(
            "promise crash test: {CRASHES} crashes, {receipts} receipts, {restored} restores \
             uploading {uploaded} records, {disowned} receipts disowned behind gaps; vanished \
             clients' receipts beyond the durable head per crash {lost:?} (bound \
             {MAX_PENDING}); {:?}",
            started.elapsed()
        );
        // Every crash left the traffic channels marked: each returning client restored.
        assert!(restored >= CRASHES, "only {restored} restores");
        upstream.stop().await;
    };
    if tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .is_err()
    {
        panic!("the promise crash test took longer than 90 s");
    }
}
