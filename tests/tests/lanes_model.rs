//! A model test of lanes (spec/PROTOCOL.md §5.4, P5): random interleavings of concurrent
//! requests from one client on its lanes (upstream delays decide the commit order), upstream
//! failures, requests over their maximum, requests the caller abandons mid-flight, exact
//! retries of recorded requests, admissions dropped after admission (a body that is not the
//! signed one) and gateway restarts on the same data directory. The gateway is the real one,
//! in process, as the tower layer over an upstream that counts what it served.
//!
//! After every step, once the gateway is quiet: the log obeys R1–R8 (no (lane, seq) twice,
//! each lane's seqs strict), every request the upstream served was charged exactly once and
//! nothing else was, the cumulative never exceeds the deposit nor the credit limit past the
//! checkpoint before each record. At the end the client's mirror is the log, byte for byte.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tally_client::{Client, ClientError};
use tally_core::hash::TreeHasher;
use tally_core::request::request_hash;
use tally_core::{Authorization, Record, SecretKey};
use tally_e2e::*;
use tally_http::headers::PAYMENT_RESPONSE;
use tally_http::Reason;
use tally_server::Gateway;

const PRICE: u128 = ECHO_PRICE;
/// 20 calls' worth: longer cases run out.
const DEPOSIT: u128 = 20 * PRICE;
/// Five calls past the last checkpoint, fewer than a batch can have in flight.
const CREDIT_LIMIT: u128 = 5 * PRICE;
/// Lanes the client uses; the dropped admissions use a lane above them.
const LANES: u32 = 6;

#[derive(Clone, Debug)]
enum Req {
    /// A paid call the upstream answers after this many ms.
    Ok(u8),
    /// The upstream answers 500 (recorded, charged 0).
    Fail,
    /// Authorizes less than the price: refused, nothing served.
    OverMax,
    /// A call the caller abandons after this many ms (its upstream takes longer).
    Abandon(u8),
}

#[derive(Clone, Debug)]
enum Op {
    /// Requests sent at once from as many tasks.
    Batch(Vec<Req>),
    /// The exact bytes of a recorded request sent again.
    Retry(usize),
    /// A request admitted, then dropped (its body is not the one signed).
    Dropped,
    /// The gateway stops and reopens on the same data directory and port.
    Restart,
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        6 => (0u8..30).prop_map(Req::Ok),
        1 => Just(Req::Fail),
        1 => Just(Req::OverMax),
        1 => (0u8..20).prop_map(Req::Abandon),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(req(), 1..=LANES as usize + 2).prop_map(Op::Batch),
        2 => proptest::arbitrary::any::<usize>().prop_map(Op::Retry),
        1 => Just(Op::Dropped),
        1 => Just(Op::Restart),
    ]
}

/// What the upstream served: successful calls, failed calls, calls being served now.
#[derive(Default)]
struct Served {
    ok: AtomicU64,
    failed: AtomicU64,
    active: AtomicU64,
}

/// `/v1/echo?d=N` echoes the body after N ms; `/v1/fail` answers 500.
fn upstream(served: Arc<Served>) -> axum::Router {
    let (s1, s2) = (served.clone(), served);
    axum::Router::new()
        .route(
            "/v1/echo",
            axum::routing::any(move |q: axum::extract::RawQuery, body: axum::body::Bytes| {
                let served = s1.clone();
                async move {
                    served.active.fetch_add(1, Ordering::SeqCst);
                    let ms =
                        q.0.and_then(|q| q.strip_prefix("d=").and_then(|d| d.parse().ok()))
                            .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    served.ok.fetch_add(1, Ordering::SeqCst);
                    served.active.fetch_sub(1, Ordering::SeqCst);
                    body
                }
            }),
        )
        .route(
            "/v1/fail",
            axum::routing::any(move || {
                let served = s2.clone();
                async move {
                    served.failed.fetch_add(1, Ordering::SeqCst);
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
                }
            }),
        )
}

struct World {
    funding: MemFunding,
    key: SecretKey,
    gdir: tempfile::TempDir,
    port: u16,
    gateway: Option<Gateway>,
    server: Option<Server>,
    served: Arc<Served>,
    ch: TestChannel,
    cdir: tempfile::TempDir,
    client: Client,
    /// Every request sent: its request hash → (path and query, body).
    sent: HashMap<[u8; 32], (String, Vec<u8>)>,
    n: u64,
}

fn model_settings(dir: &std::path::Path) -> tally_server::Settings {
    let mut s = settings(dir);
    s.credit_limit = CREDIT_LIMIT;
    s.checkpoint.every_records = 0;
    s.checkpoint.every_seconds = 0;
    s.checkpoint.every_amount = tally_http::Amount(0);
    s.charge_server_errors = false;
    s
}

async fn serve(gw: &Gateway, served: &Arc<Served>, port: u16) -> Server {
    let app = tally_server::app(gw, upstream(served.clone()));
    let mut last = String::new();
    for _ in 0..100 {
        match Server::bind(&format!("127.0.0.1:{port}"), app.clone()).await {
            Ok(s) => return s,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("binding port {port} again: {last}")
}

impl World {
    async fn new() -> World {
        let funding = MemFunding::default();
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        let gdir = tmp();
        let served = Arc::new(Served::default());
        let gateway = Gateway::open(
            model_settings(gdir.path()),
            key.clone(),
            Arc::new(funding.clone()),
        )
        .unwrap();
        let server = serve(&gateway, &served, 0).await;
        let port = server.addr.port();
        let ch = open_channel(&funding, DEPOSIT);
        let cdir = tmp();
        let mut config = client_config(&server.url(), cdir.path(), &ch);
        config.lanes = LANES;
        let client = Client::connect(config).await.unwrap();
        World {
            funding,
            key,
            gdir,
            port,
            gateway: Some(gateway),
            server: Some(server),
            served,
            ch,
            cdir,
            client,
            sent: HashMap::new(),
            n: 0,
        }
    }

    fn gw(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> Vec<Record> {
        checked_log(
            &self.gw().store().unwrap(),
            &self.ch.id,
            &self.ch.session.public(),
        )
    }

    async fn note(&mut self, path: &str, body: &[u8]) {
        let salt = self.client.request_salt().await.unwrap();
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let h = request_hash(&salt, "POST", p, q, body);
        self.sent.insert(h.0, (path.to_string(), body.to_vec()));
    }

    async fn batch(&mut self, reqs: &[Req]) {
        let mut tasks = Vec::new();
        for r in reqs {
            self.n += 1;
            let body = format!("request {}", self.n).into_bytes();
            let (path, max, abandon) = match r {
                Req::Ok(d) => (format!("/v1/echo?d={d}"), None, None),
                Req::Fail => ("/v1/fail".to_string(), None, None),
                Req::OverMax => ("/v1/echo?d=0".to_string(), Some(PRICE - 1), None),
                Req::Abandon(d) => (format!("/v1/echo?d={}", d + 30), None, Some(*d)),
            };
            self.note(&path, &body).await;
            let c = self.client.clone();
            let kind = r.clone();
            let task = tokio::spawn(async move {
                let mut b = c.post(&path).body(body);
                if let Some(m) = max {
                    b = b.max_amount(m);
                }
                b.send().await
            });
            if let Some(d) = abandon {
                let handle = task.abort_handle();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(u64::from(d))).await;
                    handle.abort();
                });
            }
            tasks.push((kind, task));
        }
        for (kind, task) in tasks {
            let Ok(answer) = task.await else {
                assert!(matches!(kind, Req::Abandon(_)), "{kind:?} task failed");
                continue;
            };
            check_answer(&kind, answer);
        }
    }

    /// Sends the exact bytes of record `k % size` again: answered from the held response or
    /// refused, never recorded again.
    async fn retry(&mut self, k: usize) {
        let log = self.log();
        if log.is_empty() {
            return;
        }
        let r = &log[k % log.len()];
        let (path, body) = self
            .sent
            .get(&r.authorization.request_hash.0)
            .cloned()
            .unwrap_or_else(|| panic!("record {} is for no request sent", r.outcome.index));
        let (status, headers, answer) = raw_signed(
            &self.url(),
            &path,
            &body,
            &r.authorization,
            &r.client_signature,
        )
        .await;
        match status {
            200 | 500 if headers.contains_key(PAYMENT_RESPONSE) => {}
            409 => assert!(matches!(
                reason(&answer),
                Reason::AlreadyRecorded { .. } | Reason::StaleSeq { .. }
            )),
            s => panic!("retry answered {s}: {}", String::from_utf8_lossy(&answer)),
        }
        assert_eq!(self.log().len(), log.len(), "a retry was recorded again");
    }

    /// A request admitted on a lane the client does not use, whose body is not the signed
    /// one: dropped after admission, nothing served, its reservation released.
    async fn dropped(&mut self) {
        let salt = self.client.request_salt().await.unwrap();
        let auth = Authorization {
            version: tally_core::VERSION,
            channel_id: self.ch.id,
            lane: LANES + 1,
            seq: 0,
            request_hash: request_hash(&salt, "POST", "/v1/echo", "", b"signed"),
            max_amount: PRICE,
            ack_size: 0,
            ack_root: tally_log::Blake3Hasher.empty(),
            ack_cumulative: 0,
            terms_hash: self.gw().terms_hash(),
        };
        let (status, _, answer) =
            raw(&self.url(), "/v1/echo", b"sent", &auth, &self.ch.session).await;
        let why = reason(&answer);
        assert!(
            matches!(
                why,
                Reason::RequestMismatch { .. }
                    | Reason::InsufficientFunds { .. }
                    | Reason::CheckpointRequired { .. }
            ),
            "dropped admission answered {status} {why:?}"
        );
    }

    async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        // The old gateway lets go of its sled files once its last handle is dropped.
        self.gateway = None;
        let mut last = String::new();
        for _ in 0..100 {
            match Gateway::open(
                model_settings(self.gdir.path()),
                self.key.clone(),
                Arc::new(self.funding.clone()),
            ) {
                Ok(g) => {
                    self.server = Some(serve(&g, &self.served, self.port).await);
                    self.gateway = Some(g);
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("reopening the gateway: {last}")
    }

    /// Waits until the upstream serves nothing and the log stops growing: every abandoned
    /// request's metering task has finished.
    async fn quiesce(&self) {
        let size = || {
            self.gw()
                .store()
                .unwrap()
                .head(&self.ch.id)
                .map_or(0, |h| h.size)
        };
        let mut stable = 0;
        let mut last = size();
        while stable < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = size();
            if self.served.active.load(Ordering::SeqCst) == 0 && now == last {
                stable += 1;
            } else {
                stable = 0;
            }
            last = now;
        }
    }

    /// The provider's invariants, checked on its log.
    fn check_invariants(&self) {
        let log = self.log();
        let ok = self.served.ok.load(Ordering::SeqCst);
        let failed = self.served.failed.load(Ordering::SeqCst);
        let charged: Vec<_> = log.iter().filter(|r| r.outcome.amount > 0).collect();
        assert_eq!(charged.len() as u64, ok, "served calls and charges differ");
        assert_eq!(
            log.len() as u64,
            ok + failed,
            "served calls and records differ"
        );
        assert!(charged.iter().all(|r| r.outcome.amount == PRICE as i128));
        let cumulative = log.last().map_or(0, |r| r.outcome.cumulative);
        assert!(
            cumulative <= DEPOSIT,
            "served {cumulative} beyond the deposit"
        );
        // P5: each record stays within the credit limit past the newest checkpoint the
        // provider could have held when it admitted it (one at a size ≤ its index).
        let mut cps: Vec<(u64, u128)> = self
            .gw()
            .store()
            .unwrap()
            .checkpoints(&self.ch.id)
            .unwrap()
            .iter()
            .map(|(size, bytes)| {
                let cp = stored_checkpoint(bytes).unwrap();
                assert_eq!(cp.size, *size);
                (cp.size, cp.cumulative)
            })
            .collect();
        cps.sort_unstable();
        for r in &log {
            let covered = cps
                .iter()
                .filter(|(size, _)| *size <= r.outcome.index)
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(0);
            assert!(
                r.outcome.cumulative - covered <= CREDIT_LIMIT,
                "record {} is {} past its checkpoint",
                r.outcome.index,
                r.outcome.cumulative - covered
            );
        }
    }
}

fn check_answer(kind: &Req, answer: Result<tally_client::PaidResponse, ClientError>) {
    match (kind, answer) {
        (Req::OverMax, Err(ClientError::Refused { reason, .. })) => {
            assert!(matches!(reason, Reason::AmountTooLow { .. }), "{reason:?}")
        }
        (Req::OverMax, other) => panic!("over the maximum: {other:?}"),
        (Req::Ok(_) | Req::Abandon(_), Ok(r)) => {
            assert_eq!(r.status, 200);
            assert_eq!(r.receipt.unwrap().outcome.amount, PRICE as i128);
        }
        (Req::Fail, Ok(r)) => {
            assert_eq!(r.status, 500);
            assert_eq!(r.receipt.unwrap().outcome.amount, 0);
        }
        // Out of money, or too much in flight past the last checkpoint: refusals the
        // client passes on.
        (
            _,
            Err(ClientError::Refused {
                reason: Reason::InsufficientFunds { .. } | Reason::CheckpointRequired { .. },
                ..
            }),
        ) => {}
        (_, Err(ClientError::Protocol(m))) if m.contains("kept refusing") => {}
        (kind, Err(e)) => panic!("{kind:?}: {e}"),
    }
}

async fn run(ops: Vec<Op>) {
    let mut w = World::new().await;
    for op in &ops {
        match op {
            Op::Batch(reqs) => w.batch(reqs).await,
            Op::Retry(k) => w.retry(*k).await,
            Op::Dropped => w.dropped().await,
            Op::Restart => w.restart().await,
        }
        w.quiesce().await;
        w.check_invariants();
    }
    // Money for one more call, which brings the mirror level with the log (any receipt it
    // missed is fetched), then the mirror must be the log.
    let signer = w.ch.checkpoint.address();
    w.funding.open(w.ch.id, signer, DEPOSIT + 10 * PRICE);
    let last = w.client.post("/v1/echo").body("last").send().await;
    assert!(last.is_ok(), "the last call: {last:?}");
    w.client.flush().await.unwrap();
    let (size, root, _) = w.client.mirror_head().await;
    let head = w.gw().store().unwrap().head(&w.ch.id).unwrap();
    assert_eq!(
        (size, root),
        (head.size, head.root),
        "the mirror is not the log"
    );
    let World {
        client,
        cdir,
        ch,
        gateway,
        server,
        ..
    } = w;
    drop(client);
    let gateway = gateway.unwrap();
    assert_mirror_is_log(cdir.path(), &ch, &gateway.store().unwrap()).await;
    if let Some(server) = server {
        server.stop().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn lanes_never_overserve_nor_charge_twice(ops in prop::collection::vec(op(), 1..10)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
