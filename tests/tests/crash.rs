//! A real crash of the gateway: the standalone gateway (`tally_server::standalone::run`, the
//! code of the `tally-gateway` binary) runs as a separate OS process with its funding read
//! from a real anvil. Several clients pay concurrently over loopback while the test SIGKILLs
//! the process at random moments and restarts it on the same sled files and port. At the end
//! every receipt a client holds must be in the provider's log byte for byte, no request and no
//! (lane, seq) may be charged twice, each lane's seqs must be strict in log order, and every
//! client's mirror must hold the provider's log byte for byte. Each traffic client keeps
//! several requests in flight at once, on as many lanes (spec/PROTOCOL.md §5.4).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tally_client::{Client, ClientError};
use tally_core::encoding::Canonical;
use tally_core::request::request_hash;
use tally_core::{Authorization, Hash, Record, SecretKey};
use tally_e2e::chain::ChainEnv;
use tally_e2e::process::{free_port, GatewayProcess};
use tally_e2e::traffic::{call, channel_state, traffic, Seen};
use tally_e2e::*;
use tally_http::headers::{encode_header, PAYMENT_SIGNATURE};
use tally_http::PaymentPayload;

const TRAFFIC_CLIENTS: usize = 4;
const CRASHES: usize = 5;
/// Requests each traffic client has in flight at once.
const IN_FLIGHT: usize = 6;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn write_config(dir: &Path, port: u16, upstream: &str, env: &ChainEnv) -> PathBuf {
    let mut file = env.gateway_file(port, upstream);
    file.checkpoint.every_records = 7;
    let path = dir.join("gateway.toml");
    ok("writing the config", file.write(&path));
    path
}

/// Sends a paid request for `client`'s next seq directly, exactly as the client would sign
/// it, and discards the answer: a request recorded whose response the client never saw.
async fn record_behind_the_clients_back(
    url: &str,
    client: &Client,
    ch: &TestChannel,
    terms_hash: Hash,
    body: &str,
) -> u64 {
    let (seq, root, cumulative) = client.mirror_head().await;
    let auth = Authorization {
        version: tally_core::VERSION,
        channel_id: ch.id,
        // One request at a time: lane 0, whose next seq is the log's size.
        lane: 0,
        seq,
        request_hash: request_hash(
            &client
                .request_salt()
                .await
                .expect("bound client has a salt"),
            "POST",
            "/v1/echo",
            "",
            body.as_bytes(),
        ),
        max_amount: ECHO_PRICE,
        ack_size: seq,
        ack_root: root,
        ack_cumulative: cumulative,
        terms_hash,
    };
    let accepted = tally_e2e::paid::accepted_at(url, "POST", "/v1/echo").await;
    let payload = PaymentPayload::new(accepted, &auth, auth.sign(&ch.session));
    let header = ok("header", encode_header("PAYMENT-SIGNATURE", &payload));
    let resp = ok(
        "raw request",
        reqwest::Client::new()
            .post(format!("{url}/v1/echo"))
            .header(PAYMENT_SIGNATURE, header)
            .body(body.to_string())
            .send()
            .await,
    );
    assert_eq!(resp.status(), 200, "the raw request was not recorded");
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_gateway_process_loses_no_receipt_and_charges_nothing_twice() {
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
        let first_start = gateway.start().await;

        let terms = ok(
            "terms",
            ok(
                "terms",
                reqwest::get(format!("{url}/.well-known/tally")).await,
            )
            .bytes()
            .await,
        );
        let terms_hash = tally_http::terms::terms_hash(&terms);

        // Traffic channels, and two probe channels driven by the test itself.
        let mut channels = Vec::new();
        for _ in 0..TRAFFIC_CLIENTS + 2 {
            channels.push((env.open(1_000_000_000).await, tmp()));
        }
        let mut clients = Vec::new();
        for (c, (ch, dir)) in channels.iter().enumerate() {
            let mut config = client_config(&url, dir.path(), ch);
            // Half the traffic clients see every transport failure themselves (no
            // transparent retries), so they choose between retrying and moving on.
            if c < TRAFFIC_CLIENTS && c % 2 == 0 {
                config.retries = 0;
            }
            clients.push(ok("connect", Client::connect(config).await));
        }
        let probe_b = clients.pop().unwrap_or_else(|| panic!("no probe"));
        let probe_a = clients.pop().unwrap_or_else(|| panic!("no probe"));
        let (ch_a, ch_b) = (
            &channels[TRAFFIC_CLIENTS].0,
            &channels[TRAFFIC_CLIENTS + 1].0,
        );
        let mut cosigned: Vec<tally_core::Checkpoint> = Vec::new();
        let mut probe_a_seen = Seen::default();
        let mut probe_b_seen = Seen::default();

        ok(
            "probe a first call",
            call(&probe_a, "/v1/echo", "probe a first", &mut probe_a_seen).await,
        );
        ok(
            "probe b first call",
            call(&probe_b, "/v1/echo", "probe b first", &mut probe_b_seen).await,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| tokio::spawn(traffic(client, c, IN_FLIGHT, stop.clone())))
            .collect();

        let mut restarts = Vec::new();
        for cycle in 0..CRASHES {
            let run_for = rand::thread_rng().gen_range(150..700);
            tokio::time::sleep(Duration::from_millis(run_for)).await;
            // Just before the crash, probe A gets a checkpoint cosigned (it must survive the
            // crash), and each probe has a request recorded whose response it never got.
            let cp = ok("probe a checkpoint", probe_a.checkpoint().await).checkpoint;
            cosigned.push(cp);
            let body_a = format!("probe a lost {cycle}");
            let seq_a =
                record_behind_the_clients_back(&url, &probe_a, ch_a, terms_hash, &body_a).await;
            let body_b = format!("probe b lost {cycle}");
            let seq_b =
                record_behind_the_clients_back(&url, &probe_b, ch_b, terms_hash, &body_b).await;
            gateway.crash();
            // Down for a moment: clients meet refused connections.
            let down = rand::thread_rng().gen_range(0..300);
            tokio::time::sleep(Duration::from_millis(down)).await;
            restarts.push(gateway.start().await);
            let state = channel_state(&url, ch_a).await;
            assert!(
                (state.checkpoint_size, state.checkpoint_cumulative.0) >= (cp.size, cp.cumulative),
                "the restarted gateway forgot checkpoint {} of probe a",
                cp.size
            );

            // Probe A retries the very request: already_recorded, mirrored, not charged again.
            match probe_a.post("/v1/echo").body(body_a.clone()).send().await {
                Err(ClientError::ResponseLost { seq }) => {
                    assert_eq!(seq, seq_a);
                    probe_a_seen.already_recorded += 1;
                }
                other => panic!("probe a expected already_recorded, got {other:?}"),
            }
            probe_a_seen.sent.insert(
                request_hash(
                    &probe_a
                        .request_salt()
                        .await
                        .expect("bound client has a salt"),
                    "POST",
                    "/v1/echo",
                    "",
                    body_a.as_bytes(),
                )
                .0,
            );
            assert_eq!(probe_a.mirror_head().await.0, seq_a + 1);
            // Probe B moves on to a new request: stale_seq, resync, then recorded after it.
            probe_b_seen.sent.insert(
                request_hash(
                    &probe_b
                        .request_salt()
                        .await
                        .expect("bound client has a salt"),
                    "POST",
                    "/v1/echo",
                    "",
                    body_b.as_bytes(),
                )
                .0,
            );
            let next = format!("probe b next {cycle}");
            ok(
                "probe b after the crash",
                call(&probe_b, "/v1/echo", &next, &mut probe_b_seen).await,
            );
            assert_eq!(
                probe_b_seen.receipts.last().map(|r| r.outcome.index),
                Some(seq_b + 1),
                "probe b did not resync past the record it never saw"
            );
            let next = format!("probe a next {cycle}");
            ok(
                "probe a after the crash",
                call(&probe_a, "/v1/echo", &next, &mut probe_a_seen).await,
            );
        }
        // Let the traffic run on the last incarnation, then stop it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut paying = Vec::new();
        for w in workers {
            paying.push(ok("traffic task", w.await));
        }
        paying.push((probe_a, probe_a_seen));
        paying.push((probe_b, probe_b_seen));

        // Everyone continues on the last incarnation.
        for (c, ((client, seen), (ch, _))) in paying.iter_mut().zip(&channels).enumerate() {
            ok(
                "final call",
                call(client, "/v1/echo", &format!("final {c}"), seen).await,
            );
            ok("flush", client.flush().await);
            let (size, root, cumulative) = client.mirror_head().await;
            assert_eq!(client.channel(), ch.id);
            let state = channel_state(&url, ch).await;
            assert_eq!(
                (state.size, state.root, state.cumulative.0),
                (size, root, cumulative),
                "client {c}: provider and mirror disagree"
            );
        }

        // A last crash, then read the provider's sled files directly.
        gateway.crash();
        let store = ok(
            "opening the provider's log",
            tally_log::LogStore::open(gdir.path().join("data").join("log")),
        );
        let provider = key.public();
        let mut totals = Seen::default();
        let mut lanes_used = Vec::new();
        for (c, ((client, seen), (ch, dir))) in paying.into_iter().zip(&channels).enumerate() {
            let (size, root, cumulative) = client.mirror_head().await;
            drop(client);
            // R1–R8 over the whole log (per-lane seqs strict in log order, acknowledgements
            // real and never backwards), no (lane, seq) and no request charged twice.
            let log = checked_log(&store, &ch.id, &ch.session.public());
            let lanes: HashSet<u32> = log.iter().map(|r| r.authorization.lane).collect();
            lanes_used.push(lanes.len());
            if c < TRAFFIC_CLIENTS {
                // Several requests were in flight at once: a second lane is leased only while
                // the first is busy.
                assert!(lanes.len() > 1, "client {c} used one lane");
            }
            // Each request whose response was lost is in the log once, at the seq the
            // provider named.
            for (seq, hash) in &seen.lost {
                let found: Vec<_> = log
                    .iter()
                    .filter(|r| r.authorization.request_hash.0 == *hash)
                    .collect();
                assert_eq!(
                    found.len(),
                    1,
                    "client {c}: a lost request is not in the log once"
                );
                assert_eq!(
                    found[0].authorization.seq, *seq,
                    "client {c}: lost request's seq"
                );
            }
            let head = store
                .head(&ch.id)
                .unwrap_or_else(|| panic!("the provider lost channel {}", ch.id.to_hex()));
            assert_eq!((head.size, head.root), (size, root));
            let mirror = open_mirror(dir.path(), ch).await;
            assert_eq!((mirror.size(), mirror.root()), (size, root));
            // The provider's log, record by record, against the mirror: same bytes, the
            // provider's signature re-derives identically, and nothing charged twice.
            let mut hashes = HashSet::new();
            for i in 0..size {
                let bytes = ok("provider record", store.record(&ch.id, i));
                let ours = ok("mirror record", mirror.record(i));
                assert_eq!(bytes, ours.to_bytes(), "record {i} differs");
                let record = ok("decoding", Record::from_bytes(&bytes));
                assert_eq!(record.outcome.index, i);
                assert_eq!(record.outcome.amount, ECHO_PRICE as i128);
                assert_eq!(record.outcome.cumulative, ECHO_PRICE * u128::from(i + 1));
                let sig = key.sign(&record.outcome.to_bytes());
                if let Some(held) = ok("mirror signature", mirror.provider_signature(i)) {
                    assert_eq!(held, sig, "record {i}: the held provider signature");
                }
                assert!(
                    seen.sent.contains(&record.authorization.request_hash.0),
                    "record {i} is for a request this client never sent"
                );
                assert!(
                    hashes.insert(record.authorization.request_hash.0),
                    "request of record {i} charged twice"
                );
            }
            assert_eq!(cumulative, ECHO_PRICE * u128::from(size));
            // Every receipt the client holds is in the provider's log.
            for r in &seen.receipts {
                let seq = r.outcome.index;
                let bytes = ok("provider record", store.record(&ch.id, seq));
                let record = ok("decoding", Record::from_bytes(&bytes));
                assert_eq!(record.outcome, r.outcome, "receipt {seq}");
                assert!(record.verify_receipt(&provider, &r.signature).is_ok());
                assert_eq!(key.sign(&record.outcome.to_bytes()), r.signature);
            }
            totals.ok += seen.ok;
            totals.resynced += seen.resynced;
            totals.already_recorded += seen.already_recorded;
            totals.transport_errors += seen.transport_errors;
            // One node on sled: nothing is ever unavailable (traffic::call files a 503 as
            // retryable for the cluster tests).
            assert_eq!(seen.unavailable, 0, "client {c} was answered 503");
            totals.receipts.extend(seen.receipts);
        }
        // Every checkpoint the provider cosigned is in its store, at its size.
        let stored = ok("stored checkpoints", store.checkpoints(&ch_a.id));
        for cp in &cosigned {
            let found = stored.iter().any(|(size, bytes)| {
                *size == cp.size && stored_checkpoint(bytes).as_ref() == Some(cp)
            });
            assert!(found, "cosigned checkpoint {} of probe a lost", cp.size);
        }
        assert_eq!(gateway.starts, CRASHES + 1);
        eprintln!(
            "crash test: {} crashes, first start {first_start:?}, restarts {restarts:?}; \
             {} receipts, {} resynced through stale_seq, {} already_recorded, {} transport \
             errors, lanes used {lanes_used:?}, {:?} in all",
            CRASHES,
            totals.ok,
            totals.resynced,
            totals.already_recorded,
            totals.transport_errors,
            started.elapsed()
        );
        assert!(totals.resynced >= CRASHES, "{totals:?}");
        assert!(totals.already_recorded >= CRASHES, "{totals:?}");
        upstream.stop().await;
    };
    if tokio::time::timeout(Duration::from_secs(55), run)
        .await
        .is_err()
    {
        panic!("the crash test took longer than 55 s");
    }
}
