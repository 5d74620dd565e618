//! When a receipt may be sent (DESIGN.md §8, spec/HTTP.md §9.3): after its record is durable
//! (`sync`), or as soon as it is appended in memory and signed, as a promise that it will be
//! durable within `max_delay` (`promise`, like a Certificate Transparency SCT and its maximum
//! merge delay, RFC 6962 §3).
//!
//! The decision is pure ([`may_promise`]); [`Promises`] counts the promises not yet kept, so
//! the gateway stops promising (and waits, as in `sync`) whenever keeping one more promise
//! is in doubt: too many outstanding, or the oldest already older than `max_delay`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The gateway's durability mode (config key `durability`, spec/HTTP.md §10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// A receipt waits for its record's group commit (P8).
    #[default]
    Sync,
    /// A receipt promises durability within `max_delay`; at most `max_pending` promises are
    /// outstanding at once (the provider's exposure to clients that never come back after a
    /// crash).
    Promise {
        /// The longest a promised record may wait for its group commit.
        max_delay: Duration,
        /// The most promised records not yet durable, over all channels.
        max_pending: u64,
    },
}

/// The config key as written: `durability = "sync"` or
/// `durability = { mode = "promise", max_delay_ms = 5, max_pending = 4096 }`
/// (spec/HTTP.md §10).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum DurabilityConfig {
    /// `"sync"`, or `"promise"` with the default bounds.
    Mode(String),
    /// A table naming the mode and its bounds.
    Table {
        /// `"sync"` or `"promise"`.
        mode: String,
        /// The promise's bound, ms (default 5).
        #[serde(default = "default_max_delay_ms")]
        max_delay_ms: u64,
        /// The most outstanding promises (default 4096).
        #[serde(default = "default_max_pending")]
        max_pending: u64,
    },
}

fn default_max_delay_ms() -> u64 {
    5
}
fn default_max_pending() -> u64 {
    4096
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig::Mode("sync".into())
    }
}

impl DurabilityConfig {
    /// The mode, or why the value is refused: an unknown mode, a zero bound, or a
    /// `max_delay_ms` over 60 s (a promise that long is no promise).
    pub fn resolve(&self) -> Result<Durability, String> {
        let (mode, max_delay_ms, max_pending) = match self {
            DurabilityConfig::Mode(m) => {
                (m.as_str(), default_max_delay_ms(), default_max_pending())
            }
            DurabilityConfig::Table {
                mode,
                max_delay_ms,
                max_pending,
            } => (mode.as_str(), *max_delay_ms, *max_pending),
        };
        match mode {
            "sync" => Ok(Durability::Sync),
            "promise" if (1..=60_000).contains(&max_delay_ms) && max_pending > 0 => {
                Ok(Durability::Promise {
                    max_delay: Duration::from_millis(max_delay_ms),
                    max_pending,
                })
            }
            "promise" => Err(format!(
                "durability: max_delay_ms must be 1..=60000 and max_pending at least 1 (got {max_delay_ms}, {max_pending})"
            )),
            other => Err(format!(
                "durability: mode {other:?} is neither \"sync\" nor \"promise\""
            )),
        }
    }
}

/// What the promise decision looks at on the channel's side; the gateway-wide bounds are
/// [`Promises::try_open`]'s, checked and taken under one lock.
#[derive(Clone, Copy, Debug)]
pub struct PromiseState {
    /// Whether this run of the gateway has durably marked the channel as one that may hold
    /// promises (spec/HTTP.md §5.6): without the mark, a crash could lose a promise unseen.
    pub channel_marked: bool,
    /// Whether the record credits a dispute: credits are always synchronous, since their
    /// credit mark names the record's index.
    pub is_credit: bool,
}

/// The bounds `(max_delay, max_pending)` a promise for this record must fit in, or `None`
/// if the receipt must wait for durability whatever the load.
pub fn may_promise(mode: Durability, s: PromiseState) -> Option<(Duration, u64)> {
    match mode {
        Durability::Sync => None,
        Durability::Promise {
            max_delay,
            max_pending,
        } => (s.channel_marked && !s.is_credit).then_some((max_delay, max_pending)),
    }
}

/// The promises not yet kept: each registered when its receipt is signed and removed once its
/// record is durable (or its commit failed).
#[derive(Debug, Default)]
pub struct Promises {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Instant>>,
}

impl Promises {
    /// Registers a promise made now if fewer than `max_pending` are outstanding and the
    /// oldest is younger than `max_delay`, checked and taken under one lock so concurrent
    /// records cannot overshoot the bound; the id removes it.
    pub fn try_open(&self, max_pending: u64, max_delay: Duration) -> Option<u64> {
        self.with(|m| {
            let full = m.len() as u64 >= max_pending;
            let late = m.values().next().is_some_and(|t| t.elapsed() >= max_delay);
            if full || late {
                return None;
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            m.insert(id, Instant::now());
            Some(id)
        })
    }

    /// The promise was kept (or can no longer be).
    pub fn close(&self, id: u64) {
        self.with(|m| m.remove(&id));
    }

    /// How many are outstanding, and the age of the oldest.
    pub fn outstanding(&self) -> (u64, Option<Duration>) {
        self.with(|m| (m.len() as u64, m.values().next().map(|t| t.elapsed())))
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, Instant>) -> T) -> T {
        // The map holds plain values: a panic elsewhere leaves it consistent.
        match self.open.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMISE: Durability = Durability::Promise {
        max_delay: Duration::from_millis(5),
        max_pending: 2,
    };

    fn state() -> PromiseState {
        PromiseState {
            channel_marked: true,
            is_credit: false,
        }
    }

    #[test]
    fn only_marked_non_credit_records_may_be_promised() {
        assert_eq!(
            may_promise(PROMISE, state()),
            Some((Duration::from_millis(5), 2))
        );
        assert_eq!(may_promise(Durability::Sync, state()), None);
        let unmarked = PromiseState {
            channel_marked: false,
            ..state()
        };
        assert_eq!(may_promise(PROMISE, unmarked), None);
        let credit = PromiseState {
            is_credit: true,
            ..state()
        };
        assert_eq!(may_promise(PROMISE, credit), None);
    }

    #[test]
    fn promises_open_only_within_the_bounds() {
        let p = Promises::default();
        let a = p.try_open(2, Duration::from_millis(50)).unwrap();
        let _b = p.try_open(2, Duration::from_millis(50)).unwrap();
        assert_eq!(p.try_open(2, Duration::from_millis(50)), None, "full");
        p.close(a);
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(
            p.try_open(2, Duration::from_millis(2)),
            None,
            "the oldest is past max_delay"
        );
        assert!(p.try_open(2, Duration::from_millis(500)).is_some());
    }

    #[test]
    fn concurrent_opens_never_overshoot_max_pending() {
        let p = std::sync::Arc::new(Promises::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| p.try_open(10, Duration::from_secs(60)).is_some())
                        .count()
                })
            })
            .collect();
        let opened: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(opened, 10);
        assert_eq!(p.outstanding().0, 10);
    }

    #[test]
    fn config_values_resolve_or_are_refused() {
        #[derive(serde::Deserialize)]
        struct File {
            durability: DurabilityConfig,
        }
        let parse = |t: &str| {
            toml::from_str::<File>(t)
                .map_err(|e| e.to_string())
                .and_then(|f| f.durability.resolve())
        };
        assert_eq!(parse("durability = \"sync\""), Ok(Durability::Sync));
        assert_eq!(
            parse("durability = { mode = \"promise\", max_delay_ms = 7, max_pending = 9 }"),
            Ok(Durability::Promise {
                max_delay: Duration::from_millis(7),
                max_pending: 9
            })
        );
        assert_eq!(
            parse("durability = \"promise\""),
            Ok(Durability::Promise {
                max_delay: Duration::from_millis(5),
                max_pending: 4096
            })
        );
        assert!(parse("durability = \"fast\"").is_err());
        assert!(parse("durability = { mode = \"promise\", max_delay_ms = 0 }").is_err());
        assert!(parse("durability = { mode = \"promise\", max_pending = 0 }").is_err());
    }

    #[test]
    fn outstanding_counts_open_promises_oldest_first() {
        let p = Promises::default();
        assert_eq!(p.outstanding(), (0, None));
        let a = p.try_open(10, Duration::from_secs(60)).unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let b = p.try_open(10, Duration::from_secs(60)).unwrap();
        let (n, oldest) = p.outstanding();
        assert_eq!(n, 2);
        assert!(oldest.unwrap() >= Duration::from_millis(3));
        p.close(a);
        let (n, oldest) = p.outstanding();
        assert_eq!(n, 1);
        assert!(oldest.unwrap() < Duration::from_millis(3));
        p.close(b);
        assert_eq!(p.outstanding(), (0, None));
    }
}
