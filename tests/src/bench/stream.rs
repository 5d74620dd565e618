//! Issue 12's numbers in one invocation: streamed paid responses (spec/HTTP.md §5.7) through
//! one gateway, against the same upstream's mock completion (`tally_cli::mock_llm`)
//! unmetered, i.e. straight to the upstream with a plain HTTP client.
//!
//! (a) Throughput: `channels × lanes` concurrent streams of [`THROUGHPUT_TOKENS`] tokens
//! with no delay between tokens, metered (the Rust SDK: `send_streaming`, every chunk,
//! `finish()` verifying the receipt) and unmetered, in alternating rounds so that noise hits
//! both alike; SSE events per second of each and the ratio (target ≥ 0.8).
//!
//! (b) Latency: sequential streams of [`LATENCY_TOKENS`] tokens, metered and unmetered one
//! after the other (alternating stream by stream), with no token delay and with a small one
//! (`--upstream-delay-ms`); time to the first and to the last body byte, p50/p99, and what
//! metering adds (target: added TTFB p50 ≤ 0.3 ms). For metered streams, also the time until
//! `finish()` returns the verified receipt.
//!
//! Both also run a third mode, the same stream through the same gateway on an unpriced path
//! (`/free/v1/chat/completions`), so what the proxy hop costs is told from what metering
//! costs; and the latency runs print the gateway's own means (`/metrics`) for the record.

use std::time::Instant;

use tally_cli::mock_llm::{events, PATH};

use crate::child::FREE_STREAM_PREFIX;
use crate::probe::{cpu_split, mean_us, quantiles, scrape, TICKS_PER_S};
use crate::report::{start_mode, Bench};
use crate::{fail, Config};

/// Tokens of one stream in the throughput runs (plus a usage event and `[DONE]`).
const THROUGHPUT_TOKENS: u64 = 256;
/// Tokens of one stream in the latency runs.
const LATENCY_TOKENS: u64 = 64;
/// Alternating rounds (one metered, one unmetered each) of the throughput runs.
const ROUNDS: u32 = 3;
/// The prompt; its token count is [`PROMPT_TOKENS`].
const PROMPT: &str = "say hello to the bill";
const PROMPT_TOKENS: u64 = 5;

/// The request body of a streamed completion of `tokens` tokens.
fn chat(tokens: u64) -> Vec<u8> {
    serde_json::json!({
        "model": "mock",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
    .into_bytes()
}

/// The body length of a completion of `tokens` tokens (each stream is checked against it).
fn body_len(tokens: u64) -> usize {
    events(PROMPT_TOKENS, tokens).iter().map(String::len).sum()
}

/// One stream's times, µs from just before the request was sent.
struct Times {
    /// The first body byte was in hand.
    first: f64,
    /// The last body byte was in hand.
    last: f64,
    /// Metered: `finish()` returned the verified receipt; unmetered: the body's end.
    end: f64,
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// One metered stream through the gateway with the SDK, every chunk read, then the receipt
/// verified.
async fn metered(c: &tally_client::Client, body: &[u8], len: usize) -> Times {
    let t = Instant::now();
    let mut s = match c.post(PATH).body(body.to_vec()).send_streaming().await {
        Ok(s) if s.status() == 200 => s,
        Ok(s) => fail(&format!("metered stream: status {}", s.status())),
        Err(e) => fail(&format!("metered stream: {e}")),
    };
    let (mut first, mut last, mut got) = (None, 0.0, 0);
    loop {
        match s.chunk().await {
            Ok(Some(b)) => {
                last = us(t);
                first.get_or_insert(last);
                got += b.len();
            }
            Ok(None) => break,
            Err(e) => fail(&format!("metered stream: {e}")),
        }
    }
    match s.finish().await {
        Ok(p) if p.receipt.is_some() && !p.broken => {}
        Ok(_) => fail("metered stream: no receipt"),
        Err(e) => fail(&format!("metered stream: {e}")),
    }
    if got != len {
        fail(&format!("metered stream: {got} body bytes, not {len}"));
    }
    Times {
        first: first.unwrap_or(last),
        last,
        end: us(t),
    }
}

/// One unmetered stream straight from the upstream, every chunk read.
async fn unmetered(http: &reqwest::Client, url: &str, body: &[u8], len: usize) -> Times {
    let t = Instant::now();
    let mut resp = match http.post(url).body(body.to_vec()).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => fail(&format!("unmetered stream: status {}", r.status())),
        Err(e) => fail(&format!("unmetered stream: {e}")),
    };
    let (mut first, mut last, mut got) = (None, 0.0, 0);
    loop {
        match resp.chunk().await {
            Ok(Some(b)) => {
                last = us(t);
                first.get_or_insert(last);
                got += b.len();
            }
            Ok(None) => break,
            Err(e) => fail(&format!("unmetered stream: {e}")),
        }
    }
    if got != len {
        fail(&format!("unmetered stream: {got} body bytes, not {len}"));
    }
    Times {
        first: first.unwrap_or(last),
        last,
        end: last,
    }
}

/// How a stream is fetched.
#[derive(Clone, Copy)]
enum Mode {
    /// Straight from the upstream (the unmetered baseline).
    Direct = 0,
    /// Through the gateway on an unpriced path: the proxy hop alone.
    Proxied = 1,
    /// Through the gateway, paid with the SDK.
    Metered = 2,
}

const MODES: [Mode; 3] = [Mode::Metered, Mode::Direct, Mode::Proxied];
const NAMES: [&str; 3] = [
    "unmetered (upstream direct)",
    "unpriced via the gateway  ",
    "metered via the gateway   ",
];

/// The modes in an order that rotates with `i`, so none is always first.
fn order(i: u32) -> impl Iterator<Item = Mode> {
    (0..3).map(move |k| MODES[(k + i as usize) % 3])
}

/// The URLs of the unmetered modes.
#[derive(Clone)]
struct Urls {
    direct: String,
    proxied: String,
}

impl Urls {
    fn of(b: &Bench) -> Urls {
        Urls {
            direct: format!("{}{PATH}", b.upstream),
            proxied: format!("{}{FREE_STREAM_PREFIX}{PATH}", b.url),
        }
    }
}

/// One stream of `mode`.
async fn once(
    mode: Mode,
    c: &tally_client::Client,
    http: &reqwest::Client,
    urls: &Urls,
    body: &[u8],
    len: usize,
) -> Times {
    match mode {
        Mode::Direct => unmetered(http, &urls.direct, body, len).await,
        Mode::Proxied => unmetered(http, &urls.proxied, body, len).await,
        Mode::Metered => metered(c, body, len).await,
    }
}

/// What the throughput runs of one mode added up to.
#[derive(Default)]
struct Rate {
    streams: f64,
    secs: f64,
    /// CPU ticks of the gateway process (gateway + upstream) and of the bench (clients).
    child_ticks: u64,
    bench_ticks: u64,
}

impl Rate {
    fn events_per_s(&self) -> f64 {
        self.streams * (THROUGHPUT_TOKENS + 2) as f64 / self.secs
    }

    fn cpu_us_per_stream(ticks: u64, streams: f64) -> f64 {
        ticks as f64 / TICKS_PER_S * 1e6 / streams
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {:>8.0} events/s ({:.0} streams/s, {:.0} streams)  gateway process CPU {:>6.0} us/stream  \
             bench CPU {:>6.0} us/stream",
            self.events_per_s(),
            self.streams / self.secs,
            self.streams,
            Self::cpu_us_per_stream(self.child_ticks, self.streams),
            Self::cpu_us_per_stream(self.bench_ticks, self.streams),
        );
    }
}

/// One round of one mode: `per_task` streams from each of `lanes` tasks per client, all at
/// once, added to `into`.
async fn round(
    b: &Bench,
    http: &reqwest::Client,
    lanes: u32,
    per_task: u32,
    mode: Mode,
    into: &mut Rate,
) {
    let body = chat(THROUGHPUT_TOKENS);
    let len = body_len(THROUGHPUT_TOKENS);
    let urls = Urls::of(b);
    let (c0, b0) = (cpu_split(b.pid), cpu_split(std::process::id()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in &b.clients {
        for _ in 0..lanes {
            let (c, http, urls, body) = (c.clone(), http.clone(), urls.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    once(mode, &c, &http, &urls, &body, len).await;
                }
            }));
        }
    }
    for t in tasks {
        if let Err(e) = t.await {
            fail(&format!("stream task: {e}"));
        }
    }
    into.secs += start.elapsed().as_secs_f64();
    let (c1, b1) = (cpu_split(b.pid), cpu_split(std::process::id()));
    into.streams += f64::from(b.clients.len() as u32 * lanes * per_task);
    into.child_ticks += (c1.0 + c1.1).saturating_sub(c0.0 + c0.1);
    into.bench_ticks += (b1.0 + b1.1).saturating_sub(b0.0 + b0.1);
}

/// (a): rounds of every mode, in an order that rotates from round to round.
async fn throughput(b: &Bench, http: &reqwest::Client, cfg: &Config) -> [Rate; 3] {
    let mut rates: [Rate; 3] = Default::default();
    // Warm-up: connections, lanes, the mirror.
    for mode in MODES {
        round(b, http, cfg.lanes, 2, mode, &mut Rate::default()).await;
    }
    for r in 0..ROUNDS {
        for mode in order(r) {
            round(
                b,
                http,
                cfg.lanes,
                cfg.requests,
                mode,
                &mut rates[mode as usize],
            )
            .await;
        }
    }
    rates
}

/// p50/p99 of the first, last and end times of a series.
struct Latency {
    first: (f64, f64),
    last: (f64, f64),
    end: (f64, f64),
}

/// Means inside the gateway over the metered streams of a latency run (`/metrics`), µs.
struct Inside {
    /// Admission before the upstream was asked, plus the record after its last byte.
    overhead: f64,
    /// The log's group commit (part of the record in sync mode).
    commit: f64,
}

fn latency_of(times: &[Times]) -> Latency {
    let q = |f: fn(&Times) -> f64| quantiles(times.iter().map(f).collect());
    Latency {
        first: q(|t| t.first),
        last: q(|t| t.last),
        end: q(|t| t.end),
    }
}

/// (b): `n` sequential streams of each mode, one of each in turn (rotating order).
async fn latency(b: &Bench, http: &reqwest::Client, n: u32) -> ([Latency; 3], Inside) {
    let Some(c) = b.clients.first() else {
        fail("no client")
    };
    let body = chat(LATENCY_TOKENS);
    let len = body_len(LATENCY_TOKENS);
    let urls = Urls::of(b);
    for mode in MODES {
        for _ in 0..5 {
            once(mode, c, http, &urls, &body, len).await;
        }
    }
    let before = scrape(&b.url).await;
    let mut times: [Vec<Times>; 3] = Default::default();
    for i in 0..n {
        for mode in order(i) {
            times[mode as usize].push(once(mode, c, http, &urls, &body, len).await);
        }
    }
    let after = scrape(&b.url).await;
    let inside = Inside {
        overhead: mean_us(&before, &after, "tally_metering_overhead_seconds"),
        commit: mean_us(&before, &after, "tally_log_commit_seconds"),
    };
    (times.map(|t| latency_of(&t)), inside)
}

fn print_latency(delay_ms: u64, (l, inside): &([Latency; 3], Inside), n: u32) {
    println!("-- latency: {n} sequential streams of {LATENCY_TOKENS} tokens per mode, token delay {delay_ms} ms");
    for (name, l) in NAMES.iter().zip(l) {
        println!(
            "{name}: first byte p50 {:>8.0} us  p99 {:>8.0} us;  last byte p50 {:>8.0} us  p99 {:>8.0} us",
            l.first.0, l.first.1, l.last.0, l.last.1
        );
    }
    let (direct, proxied, paid) = (&l[0], &l[1], &l[2]);
    println!(
        "metered, receipt verified (finish() returned): p50 {:.0} us  p99 {:.0} us",
        paid.end.0, paid.end.1
    );
    println!(
        "inside the gateway, means over the metered streams: metering overhead {:.0} us \
         (admission + the record after the last byte), of which log group commit {:.0} us",
        inside.overhead, inside.commit
    );
    let added = |m: (f64, f64), u: (f64, f64)| (m.0 - u.0, m.1 - u.1);
    let (h50, h99) = added(proxied.first, direct.first);
    let (f50, f99) = added(paid.first, direct.first);
    let (l50, l99) = added(paid.last, direct.last);
    println!(
        "added by the proxy hop alone (unpriced): first byte p50 {h50:.0} us, p99 {h99:.0} us"
    );
    println!(
        "added by metering: first byte p50 {f50:.0} us, p99 {f99:.0} us (target p50 <= 300 us: {}); \
         last byte p50 {l50:.0} us, p99 {l99:.0} us",
        if f50 <= 300.0 { "met" } else { "missed" }
    );
}

/// A gateway process with the mock's tokens `delay_ms` apart.
async fn start(cfg: &Config, delay_ms: u64) -> Bench {
    let c = Config {
        channels: cfg.channels,
        requests: cfg.requests,
        lanes: cfg.lanes,
        delay_ms,
    };
    start_mode(&c, false).await
}

/// Runs (a) with no token delay, then (b) with none and with `cfg.delay_ms`, and prints them.
pub async fn scenario(cfg: &Config) {
    let k = cfg.channels * cfg.lanes;
    println!(
        "tally-bench stream: gateway in sync mode; throughput: {k} concurrent streams ({} channels x {} lanes) \
         of {THROUGHPUT_TOKENS} tokens ({} events), no token delay, {ROUNDS} alternating rounds of {} streams per task",
        cfg.channels,
        cfg.lanes,
        THROUGHPUT_TOKENS + 2,
        cfg.requests
    );
    let http = reqwest::Client::new();
    let b = start(cfg, 0).await;
    let rates = throughput(&b, &http, cfg).await;
    for (name, r) in NAMES.iter().zip(&rates) {
        r.print(name);
    }
    let direct = rates[Mode::Direct as usize].events_per_s();
    let ratio = rates[Mode::Metered as usize].events_per_s() / direct;
    println!(
        "metered/unmetered events/s = {ratio:.3} (target >= 0.8: {}); unpriced via the gateway/unmetered = {:.3}",
        if ratio >= 0.8 { "met" } else { "missed" },
        rates[Mode::Proxied as usize].events_per_s() / direct
    );
    let n = 200;
    let l = latency(&b, &http, n).await;
    b.stop();
    print_latency(0, &l, n);
    if cfg.delay_ms > 0 {
        let b = start(cfg, cfg.delay_ms).await;
        let n = 100;
        let l = latency(&b, &http, n).await;
        b.stop();
        print_latency(cfg.delay_ms, &l, n);
    }
}
