//! The log store behind a slot that can be swapped while the gateway runs.
//!
//! tally-log stops accepting writes after a failed group commit (a full disk, an I/O error),
//! because what reached the disk is then unknown until the store is reopened and checked
//! (spec/DESIGN-DECISIONS.md, "failed commits poison the writer"). The gateway must neither
//! keep forwarding paid requests it cannot record nor need a restart: a poisoned store makes
//! paid requests fail fast with `store_unavailable` (before the upstream is called) and
//! `/healthz` answer 503, and a recovery attempt runs at most once a second: it proves that
//! the data directory takes a synced write again, then drops the store and opens it anew,
//! whose checks decide whether the log is sound. Every channel's state is then reloaded from
//! the reopened log; admissions taken before the swap belong to the old generation and can
//! no longer append ([`StoreSlot::for_generation`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tally_log::{LogStore, StoreConfig};

use crate::errors::GatewayError;

/// How often a recovery is attempted while the store is poisoned.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Bytes written and synced to prove the disk takes writes again.
const PROBE_BYTES: usize = 1 << 20;

struct Current {
    store: Option<Arc<LogStore>>,
    generation: u64,
}

/// The gateway's log store, reopenable in place.
pub(crate) struct StoreSlot {
    path: PathBuf,
    config: StoreConfig,
    current: RwLock<Current>,
    recovering: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
}

fn unavailable(why: &str) -> GatewayError {
    GatewayError::new(
        tally_http::Reason::StoreUnavailable,
        format!("the gateway's log cannot take writes ({why}); nothing was forwarded or charged; retry shortly"),
    )
}

impl StoreSlot {
    /// Opens the store at `path`.
    pub(crate) fn open(path: PathBuf, config: StoreConfig) -> Result<Self, tally_log::LogError> {
        let store = LogStore::open_with(&path, tally_log::Blake3Hasher, config.clone())?;
        Ok(StoreSlot {
            path,
            config,
            current: RwLock::new(Current {
                store: Some(Arc::new(store)),
                generation: 0,
            }),
            recovering: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
        })
    }

    /// The current store and its generation, for reading (a poisoned store still reads).
    pub(crate) fn current(&self) -> Result<(Arc<LogStore>, u64), GatewayError> {
        let cur = self
            .current
            .read()
            .map_err(|_| GatewayError::internal("store slot lock poisoned"))?;
        match &cur.store {
            Some(s) => Ok((s.clone(), cur.generation)),
            None => Err(unavailable("it is being reopened")),
        }
    }

    /// The store, if it is still the one of `generation`: an admission taken before a reopen
    /// holds state of the old log and must not append to the new one.
    pub(crate) fn for_generation(&self, generation: u64) -> Result<Arc<LogStore>, GatewayError> {
        let (store, now) = self.current()?;
        if now != generation {
            return Err(unavailable(
                "it was reopened while this request was admitted",
            ));
        }
        Ok(store)
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn problem(&self) -> Option<String> {
        match self.current() {
            Ok((store, _)) => store.poisoned(),
            Err(e) => Some(e.message),
        }
    }

    /// Fails fast while the store cannot take writes, starting a recovery attempt if none ran
    /// in the last second. `on_reopen` runs after a successful reopen (to drop every
    /// channel's in-memory state).
    pub(crate) fn ensure_writable(
        self: &Arc<Self>,
        on_reopen: impl FnOnce() + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Some(problem) = self.problem() else {
            return Ok(());
        };
        self.start_recovery(on_reopen);
        tracing::warn!(%problem, "refusing a paid request: the log store cannot take writes");
        Err(unavailable("a write failed"))
    }

    fn start_recovery(self: &Arc<Self>, on_reopen: impl FnOnce() + Send + 'static) {
        let due = match self.last_attempt.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= RETRY_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if !due || self.recovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = self.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.recovering.store(false, Ordering::Release);
            return;
        };
        runtime.spawn_blocking(move || {
            match slot.recover() {
                Ok(()) => {
                    tracing::info!("the log store was reopened and checked; writes resume");
                    on_reopen();
                }
                Err(e) => tracing::warn!(error = %e, "the log store is still unavailable"),
            }
            slot.recovering.store(false, Ordering::Release);
        });
    }

    /// Blocking: probe the disk, swap the store out, wait for its last users, reopen.
    fn recover(&self) -> Result<(), String> {
        probe_write(&self.path).map_err(|e| format!("the data directory refuses writes: {e}"))?;
        let old = {
            let mut cur = self
                .current
                .write()
                .map_err(|_| "store slot lock poisoned")?;
            cur.generation += 1;
            cur.store.take()
        };
        if let Some(old) = old {
            // Requests that took the store before the swap finish within moments; the old
            // store must be dropped (its writer joined, sled's file lock released) first.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old);
        }
        let mut last_error = String::new();
        for _ in 0..50 {
            match LogStore::open_with(&self.path, tally_log::Blake3Hasher, self.config.clone()) {
                Ok(store) => {
                    let mut cur = self
                        .current
                        .write()
                        .map_err(|_| "store slot lock poisoned")?;
                    cur.store = Some(Arc::new(store));
                    return Ok(());
                }
                // sled releases its file lock a moment after the last handle is dropped.
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Err(format!("reopening the log failed: {last_error}"))
    }
}

/// Writes and syncs [`PROBE_BYTES`] next to the store, then removes them.
fn probe_write(store_path: &Path) -> std::io::Result<()> {
    let dir = store_path.parent().unwrap_or(store_path);
    let probe = dir.join(".tally-write-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result
}
