//! Prometheus counters and histograms for `/metrics` (text exposition format 0.0.4).
//! Lock-free atomics; rendering walks them once.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
/// Fine below 1 ms, where the metering overhead and a promised receipt live (DESIGN.md §5:
/// p99 ≤ 0.3 ms).
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_25, 0.000_3, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The gauges `/metrics` reads from the log and the gateway's state at render time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Channels with records.
    pub channels: usize,
    /// Durable records over all channels.
    pub log_records: u64,
    /// Channels held in memory.
    pub in_memory: usize,
    /// Promised records not yet durable.
    pub promised: u64,
    /// Age of the oldest of them.
    pub oldest_promise: std::time::Duration,
    /// Records queued to the log and not yet durable (any mode).
    pub log_pending: u64,
    /// Age of the oldest of them.
    pub log_pending_oldest: std::time::Duration,
}

/// Every metric the gateway exports.
#[derive(Default)]
pub struct Metrics {
    /// Paid requests that produced a record.
    pub metered: AtomicU64,
    /// Requests on free routes.
    pub free: AtomicU64,
    /// Idempotent retries answered from a stored record.
    pub replays: AtomicU64,
    /// Refusals, by reason code.
    refusals: Mutex<Vec<(&'static str, u64)>>,
    /// Sum of positive amounts recorded.
    pub charged: Mutex<u128>,
    /// Sum of credits recorded (absolute value).
    pub credited: Mutex<u128>,
    /// Checkpoints accepted.
    pub checkpoints: AtomicU64,
    /// Funding reads sent to the chain node.
    pub chain_reads: std::sync::Arc<AtomicU64>,
    /// Time the gateway itself spent on a metered request (verify, record, sign), excluding
    /// the upstream.
    pub overhead: Histogram,
    /// Whole metered request time, upstream included.
    pub total: Histogram,
    /// Time from append to durable (group commit wait).
    pub commit: Histogram,
}

impl Metrics {
    /// Counts a refusal.
    pub fn refused(&self, code: &'static str) {
        if let Ok(mut v) = self.refusals.lock() {
            match v.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => v.push((code, 1)),
            }
        }
    }

    /// Refusals counted so far, by reason code, in first-seen order.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.refusals.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Adds a recorded amount.
    pub fn add_amount(&self, amount: i128) {
        let target = if amount >= 0 {
            &self.charged
        } else {
            &self.credited
        };
        if let Ok(mut t) = target.lock() {
            *t = t.saturating_add(amount.unsigned_abs());
        }
    }

    /// The text exposition, with the log gauges supplied by the caller.
    pub fn render(&self, g: &Gauges) -> String {
        let Gauges {
            channels,
            log_records,
            in_memory,
            promised,
            oldest_promise,
            log_pending,
            log_pending_oldest,
        } = *g;
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "tally_requests_metered_total",
            "Paid requests recorded in the log.",
            self.metered.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_requests_free_total",
            "Requests on unpriced routes.",
            self.free.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_requests_replayed_total",
            "Retries answered from an existing record.",
            self.replays.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_checkpoints_accepted_total",
            "Client-signed checkpoints accepted.",
            self.checkpoints.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tally_chain_reads_total",
            "Funding reads sent to the chain node.",
            self.chain_reads.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP tally_channels_in_memory Channels whose state is held in memory.\n# TYPE tally_channels_in_memory gauge\ntally_channels_in_memory {in_memory}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_requests_refused_total Refused requests by reason.\n# TYPE tally_requests_refused_total counter"
        );
        if let Ok(v) = self.refusals.lock() {
            for (code, n) in v.iter() {
                let _ = writeln!(out, "tally_requests_refused_total{{reason=\"{code}\"}} {n}");
            }
        }
        let charged = self.charged.lock().map(|v| *v).unwrap_or(0);
        let credited = self.credited.lock().map(|v| *v).unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP tally_charged_amount_total Sum of charges recorded, token base units.\n# TYPE tally_charged_amount_total counter\ntally_charged_amount_total {charged}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_credited_amount_total Sum of credits recorded, token base units.\n# TYPE tally_credited_amount_total counter\ntally_credited_amount_total {credited}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_log_records Records in the log over all channels.\n# TYPE tally_log_records gauge\ntally_log_records {log_records}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_log_channels Channels with at least one record.\n# TYPE tally_log_channels gauge\ntally_log_channels {channels}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_promised_records Receipts promised whose records are not yet durable (durability = promise).\n# TYPE tally_promised_records gauge\ntally_promised_records {promised}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_promised_oldest_seconds Age of the oldest promise not yet durable (0 when none).\n# TYPE tally_promised_oldest_seconds gauge\ntally_promised_oldest_seconds {:.6}",
            oldest_promise.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP tally_log_pending_records Records queued to the log and not yet durable.\n# TYPE tally_log_pending_records gauge\ntally_log_pending_records {log_pending}"
        );
        let _ = writeln!(
            out,
            "# HELP tally_log_pending_oldest_seconds Age of the oldest record queued to the log and not yet durable (0 when none).\n# TYPE tally_log_pending_oldest_seconds gauge\ntally_log_pending_oldest_seconds {:.6}",
            log_pending_oldest.as_secs_f64()
        );
        self.overhead.render(
            &mut out,
            "tally_metering_overhead_seconds",
            "Gateway time per metered request, upstream excluded.",
        );
        self.total.render(
            &mut out,
            "tally_metered_request_seconds",
            "Whole metered request time, upstream included.",
        );
        self.commit.render(
            &mut out,
            "tally_log_commit_seconds",
            "Wait for the group commit of one record.",
        );
        out
    }
}
