//! The gateway process: upstream + gateway run in a child process of the bench, so that
//! /proc CPU accounting is theirs only, while the clients share the machine from the parent.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use axum::routing::any;
use axum::Router;
use tally_core::{ChannelId, SecretKey};
use tally_e2e::{settings, spawn, spawn_gateway, MemFunding};

use crate::fail;

/// The keys and id of bench channel `i` (deterministic, so the child and the parent agree).
pub fn channel_keys(i: u32) -> (SecretKey, PrivateKeySigner, ChannelId) {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let session = SecretKey::from_seed(&seed);
    seed[31] = 1;
    let signer = match PrivateKeySigner::from_bytes(&alloy::primitives::B256::from(seed)) {
        Ok(s) => s,
        Err(e) => fail(&format!("checkpoint key: {e}")),
    };
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_le_bytes());
    id[4] = 0x42;
    (session, signer, ChannelId(id))
}

/// The bench's upstream: `/v1/echo` (priced) echoes the body and `/free` (unpriced) answers
/// a constant, both after `delay` (a stand-in for an LLM's or tool's latency);
/// `/v1/chat/completions` streams a mock completion, one token every `delay` (issue 12), and
/// so does `/free/v1/chat/completions`, unpriced.
fn upstream(delay: Duration) -> Router {
    let wait = move || async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    };
    Router::new()
        .route(
            "/v1/echo",
            any(move |body: axum::body::Bytes| async move {
                wait().await;
                body
            }),
        )
        .route(
            "/free",
            any(move || async move {
                wait().await;
                "free"
            }),
        )
        .merge(tally_cli::mock_llm::routes(delay))
        .nest(FREE_STREAM_PREFIX, tally_cli::mock_llm::routes(delay))
}

/// Where the upstream also serves the mock completion, unpriced at the gateway: a stream
/// through the same proxy without metering (the proxy hop's own cost, issue 12).
pub const FREE_STREAM_PREFIX: &str = "/free";

/// Child mode: serve upstream + gateway, print the gateway's and the upstream's addresses on
/// one line, run until stdin closes.
/// `promise`: the gateway runs in promise mode (5 ms, 4096), else in sync mode.
pub async fn serve_child(dir: PathBuf, channels: u32, delay_ms: u64, promise: bool) {
    // `TALLY_BENCH_LOG=text|json`: log as `tally-gateway` does (one info event per metered
    // request), to /dev/null, so the cost of formatting and writing the logs is measured.
    let format = match std::env::var("TALLY_BENCH_LOG").as_deref() {
        Ok("text") => Some(tally_server::standalone::LogFormat::Text),
        Ok("json") => Some(tally_server::standalone::LogFormat::Json),
        _ => None,
    };
    if let Some(f) = format {
        if let Err(e) = tally_server::standalone::init_logging(f) {
            fail(&format!("logging: {e}"));
        }
    }
    let funding = MemFunding::default();
    for i in 0..channels {
        let (_, signer, id) = channel_keys(i);
        funding.open(id, signer.address(), u128::MAX / 4);
    }
    let upstream = spawn(upstream(Duration::from_millis(delay_ms))).await;
    let mut s = settings(&dir);
    s.credit_limit = u128::MAX / 8;
    s.checkpoint.every_records = 0;
    s.checkpoint.every_seconds = 0;
    s.checkpoint.every_amount = tally_http::Amount(0);
    if promise {
        s.durability = tally_server::durability::Durability::Promise {
            max_delay: Duration::from_millis(5),
            max_pending: 4096,
        };
    }
    let key = SecretKey::from_seed(&[9u8; 32]);
    let (_gw, server) = spawn_gateway(s, &key, &funding, &upstream).await;
    if std::env::var_os("TALLY_BENCH_ALLOCS").is_some() {
        crate::allocs::enable();
    }
    println!("{} {}", server.url(), upstream.url());
    // Commands on stdin: `allocs` prints the allocation totals; end of input stops.
    let _ = tokio::task::spawn_blocking(|| loop {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim() == "allocs" => {
                let (count, bytes) = crate::allocs::totals();
                println!("{count} {bytes}");
            }
            Ok(_) => {}
        }
    })
    .await;
    server.stop().await;
    upstream.stop().await;
}

/// The running gateway process.
pub struct Gateway {
    process: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    /// Its pid (for /proc).
    pub pid: u32,
    /// The gateway's URL.
    pub url: String,
    /// The upstream's URL (the same process), for unmetered baselines that skip the gateway.
    pub upstream: String,
}

impl Gateway {
    /// `(allocations, bytes)` the gateway process has made since it started serving (zeros
    /// unless `TALLY_BENCH_ALLOCS` is set).
    pub fn allocs(&mut self) -> (u64, u64) {
        let Some(input) = self.input.as_mut() else {
            return (0, 0);
        };
        if writeln!(input, "allocs")
            .and_then(|()| input.flush())
            .is_err()
        {
            return (0, 0);
        }
        let mut line = String::new();
        let _ = self.output.read_line(&mut line);
        let mut it = line.split_whitespace().map(|v| v.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// Closes its input (it stops) and waits for it.
    pub fn stop(mut self) {
        drop(self.input.take());
        let _ = self.process.wait();
    }

    /// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to the process, by its pid.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status();
        if !matches!(sent, Ok(s) if s.success()) {
            fail(&format!("kill -{signal} {}", self.pid));
        }
    }

    /// A clean stop: SIGTERM, then up to 30 s for the process to end by itself (a node
    /// flushes its promises and releases its leases, so the next node need not wait them
    /// out), then [`stop`](Self::stop). Closing its input first would end it at once.
    pub fn terminate(mut self) {
        self.signal("TERM");
        let begin = std::time::Instant::now();
        while begin.elapsed() < Duration::from_secs(30) {
            if !matches!(self.process.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
    }
}

/// Starts the gateway process (under `TALLY_BENCH_WRAP`, e.g. valgrind, if set) and returns
/// it once it serves.
pub fn start(gdir: &Path, channels: u32, delay_ms: u64, promise: bool) -> Gateway {
    let mode = if promise { "promise" } else { "sync" };
    let args = [
        "--serve-child".to_string(),
        gdir.display().to_string(),
        channels.to_string(),
        delay_ms.to_string(),
        mode.to_string(),
    ];
    spawn_child(&args)
}

/// Starts a `tally serve` node process (`--serve-node`, [`serve_node`]) over the config file
/// `config`, listening at `url`, with its upstream on `upstream_port`; returns it once
/// `/healthz` answers.
pub fn start_node(config: &Path, url: &str, upstream_port: u16, delay_ms: u64) -> Gateway {
    let args = [
        "--serve-node".to_string(),
        config.display().to_string(),
        url.to_string(),
        upstream_port.to_string(),
        delay_ms.to_string(),
    ];
    spawn_child(&args)
}

/// Runs this executable with `args` (under `TALLY_BENCH_WRAP` if set) and reads the
/// `<gateway url> <upstream url>` line it prints once it serves.
fn spawn_child(args: &[String]) -> Gateway {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => fail(&format!("current exe: {e}")),
    };
    let wrap: Vec<String> = std::env::var("TALLY_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = match command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("TALLY_BENCH_LOG").is_some() {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
    {
        Ok(c) => c,
        Err(e) => fail(&format!("spawning the gateway process: {e}")),
    };
    let pid = child.id();
    let out = child.stdout.take().unwrap_or_else(|| fail("child stdout"));
    let mut output = BufReader::new(out);
    let mut line = String::new();
    let _ = output.read_line(&mut line);
    let mut urls = line.split_whitespace().map(str::to_string);
    let (Some(url), Some(upstream)) = (urls.next(), urls.next()) else {
        fail("the gateway process did not start")
    };
    Gateway {
        input: child.stdin.take(),
        process: child,
        output,
        pid,
        url,
        upstream,
    }
}

/// Node mode (`--serve-node`): the bench's upstream on `upstream_port`, and
/// `tally_server::standalone::run` over `config` (what `tally serve` runs, spec/CLUSTER.md
/// §10) listening at `url`; prints `<url> <upstream url>` once `/healthz` answers and exits
/// when stdin closes (a SIGTERM stops it cleanly first, releasing its leases).
pub async fn serve_node(config: PathBuf, url: String, upstream_port: u16, delay_ms: u64) {
    let app = upstream(Duration::from_millis(delay_ms));
    let upstream = match tally_e2e::Server::bind(&format!("127.0.0.1:{upstream_port}"), app).await {
        Ok(s) => s,
        Err(e) => fail(&format!("upstream on port {upstream_port}: {e}")),
    };
    // `RUST_LOG=warn` shows the nodes' warnings (failed forwards, lost leases) on stderr; by
    // default a node logs nothing, as the gateway of the other scenarios.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tally_server::standalone::init_logging(tally_server::standalone::LogFormat::Text);
    }
    let node = tokio::spawn(async move {
        if let Err(e) = tally_server::standalone::run(&config).await {
            fail(&format!("tally serve: {e}"));
        }
    });
    let http = reqwest::Client::new();
    let begin = std::time::Instant::now();
    loop {
        match http.get(format!("{url}/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ if begin.elapsed() > Duration::from_secs(30) => fail("the node did not come up"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    println!("{url} {}", upstream.url());
    let input = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while matches!(std::io::stdin().read_line(&mut sink), Ok(n) if n > 0) {}
    });
    // Ends when the node does (a SIGTERM: after its clean shutdown) or when stdin closes.
    tokio::select! {
        _ = node => {}
        _ = input => {}
    }
    std::process::exit(0);
}

/// One tally client per channel, each allowed `lanes` requests in flight.
pub async fn clients(
    url: &str,
    work: &Path,
    channels: u32,
    lanes: u32,
) -> Vec<tally_client::Client> {
    let configs = (0..channels)
        .map(|i| {
            let (session, signer, id) = channel_keys(i);
            tally_client::ClientConfig::new(
                url.to_string(),
                work.join(format!("client{i}")),
                id,
                session,
                signer,
            )
        })
        .collect();
    connect_clients(configs, lanes).await
}

/// Connects one client per configuration, each allowed `lanes` requests in flight.
pub async fn connect_clients(
    configs: Vec<tally_client::ClientConfig>,
    lanes: u32,
) -> Vec<tally_client::Client> {
    let mut out = Vec::new();
    for (i, mut cfg) in configs.into_iter().enumerate() {
        cfg.lanes = lanes;
        match tally_client::Client::connect(cfg).await {
            Ok(c) => out.push(c),
            Err(e) => fail(&format!("client {i}: {e}")),
        }
    }
    out
}
