//! Proves that an append reported durable survives SIGKILL: a child process (this test
//! binary, re-run on the ignored `crash_child` test) appends deterministic records to three
//! channels and reports each resolved ticket; the parent kills it at a random moment, reopens
//! the store and checks that every channel holds at least what was reported, that every
//! record below the head has the expected content, that fsck is clean, that the roots equal
//! a `MemoryTree` rebuilt from the records, and that each new head extends the previous one.
//! The same directory is used for every cycle, so the log grows across crashes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_core::ChannelId;
use tally_log::{verify_consistency, Blake3Hasher, Hash, LogStore, MemoryTree, StoreConfig};

const CHILD_ENV: &str = "TALLY_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "crash_child";
const CHANNELS: u8 = 3;
const CYCLES: usize = 8;

fn channel(c: u8) -> ChannelId {
    ChannelId(*blake3::hash(&[b'k', c]).as_bytes())
}

/// Record `i` of channel `c`, the same in every process: distinct and of varied length.
fn content(c: u8, i: u64) -> Vec<u8> {
    let mut r = format!("crash channel {c} record {i} ").into_bytes();
    let pad = blake3::hash(&[&[c][..], &i.to_be_bytes()].concat());
    r.extend_from_slice(&pad.as_bytes()[..(i % 33) as usize]);
    r
}

fn config() -> StoreConfig {
    StoreConfig {
        max_group_records: 64,
        queue_depth: 1024,
        cache_bytes: 8 << 20,
        tile_cache_bytes: 1 << 20,
        sync_data: true,
    }
}

/// The child: only ever run by `appends_survive_sigkill`, which sets `TALLY_CRASH_CHILD_DIR`.
/// It appends until it is killed.
#[test]
#[ignore = "run only as the child process of appends_survive_sigkill"]
fn crash_child() {
    let dir = std::env::var_os(CHILD_ENV)
        .expect("crash_child is run only by appends_survive_sigkill, which sets the store dir");
    let store = LogStore::open_with(PathBuf::from(dir), Blake3Hasher, config()).unwrap();
    let mut next: Vec<u64> = (0..CHANNELS)
        .map(|c| store.head(&channel(c)).map_or(0, |h| h.size))
        .collect();
    // What earlier (killed) children wrote must be exactly the deterministic content.
    for c in 0..CHANNELS {
        let n = next[c as usize];
        let tail = n.saturating_sub(16);
        let got = store.records(&channel(c), tail..n).unwrap();
        let want: Vec<Vec<u8>> = (tail..n).map(|i| content(c, i)).collect();
        assert_eq!(got, want, "channel {c} before {n}");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {next:?}").unwrap();
    out.flush().unwrap();
    let seed = next.iter().sum::<u64>();
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        // Several tickets in flight at once, over several channels, so group commits mix them.
        let mut tickets = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let c = rng.gen_range(0..CHANNELS);
            let start = next[c as usize];
            let len = *[1u64, 1, 2, 3, 7, 16, 40].get(rng.gen_range(0..7)).unwrap();
            let batch: Vec<Vec<u8>> = (start..start + len).map(|i| content(c, i)).collect();
            next[c as usize] += len;
            tickets.push((c, start..start + len, store.append(channel(c), batch)));
        }
        for (c, want, ticket) in tickets {
            let got = ticket.wait().expect("append");
            assert_eq!(got, want, "channel {c}");
            writeln!(out, "durable {c} {}", got.end).unwrap();
            out.flush().unwrap();
        }
    }
}

/// What one killed child reported: the highest durable end per channel.
fn run_child_and_kill(dir: &Path, rng: &mut StdRng) -> (BTreeMap<u8, u64>, usize) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            CHILD_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut durable = BTreeMap::new();
    let mut reports = 0;
    let handle = |line: &str, durable: &mut BTreeMap<u8, u64>, reports: &mut usize| {
        if let Some(rest) = line.strip_prefix("durable ") {
            let mut parts = rest.split(' ');
            let c: u8 = parts.next().unwrap().parse().unwrap();
            let end: u64 = parts.next().unwrap().parse().unwrap();
            let e = durable.entry(c).or_insert(0);
            *e = (*e).max(end);
            *reports += 1;
        }
    };
    // Wait for the child to have opened the store (recovery included), so that the kill
    // lands while appends are in flight, not during process start-up.
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            // libtest may print "test crash_child ... " in front of the child's first line.
            Ok(line) if line.contains("ready [") => break,
            Ok(line) => handle(&line, &mut durable, &mut reports),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "child never became ready ({e:?}, {:?}, status {status})",
                    started.elapsed()
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_millis(rng.gen_range(50..=400));
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => handle(&line, &mut durable, &mut reports),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!("child exited before it was killed: {status}");
            }
        }
    }
    // Child::kill is SIGKILL on unix: no destructor, no flush, no writer shutdown.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was killed, yet {status}");
    // Lines the child wrote before dying are still in the pipe: they were reported durable.
    reader.join().unwrap();
    for line in rx.try_iter() {
        handle(&line, &mut durable, &mut reports);
    }
    (durable, reports)
}

#[test]
fn appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("TALLY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (set TALLY_CRASH_SEED to choose the kill timings)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut previous: BTreeMap<u8, (u64, Hash)> = BTreeMap::new();
    let mut total_reports = 0;
    for cycle in 0..CYCLES {
        let (durable, reports) = run_child_and_kill(dir.path(), &mut rng);
        total_reports += reports;
        let store = LogStore::open_with(dir.path(), Blake3Hasher, config())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen after SIGKILL failed: {e}"));
        let mut sizes = Vec::new();
        for c in 0..CHANNELS {
            let id = channel(c);
            let ctx = format!("cycle {cycle} channel {c}");
            let head = store.head(&id);
            let size = head.map_or(0, |h| h.size);
            sizes.push(size);
            let reported = durable.get(&c).copied().unwrap_or(0);
            assert!(
                size >= reported,
                "{ctx}: head {size} < reported durable {reported}"
            );
            let report = store.fsck(&id).unwrap();
            assert!(report.is_ok(), "{ctx}: {report:?}");
            assert_eq!(report.size, size);
            let records = store.records(&id, 0..size).unwrap();
            assert_eq!(records.len() as u64, size);
            let mut mem = MemoryTree::new(Blake3Hasher);
            for (i, r) in records.iter().enumerate() {
                assert_eq!(*r, content(c, i as u64), "{ctx}: record {i}");
                mem.push(r);
            }
            if let Some(head) = head {
                assert_eq!(head.root, mem.root(), "{ctx}");
            }
            // Roots at a spread of historical sizes, and at every size since the last cycle.
            let since = previous.get(&c).map_or(0, |p| p.0);
            for s in (0..=size).filter(|s| s % 97 == 0 || *s >= since || size - s < 8) {
                assert_eq!(
                    store.root_at(&id, s).unwrap(),
                    mem.root_at(s).unwrap(),
                    "{ctx}: {s}"
                );
            }
            // The log only grew: the previous head is a prefix of this one.
            if let Some(&(old, old_root)) = previous.get(&c) {
                assert!(size >= old, "{ctx}: shrank from {old} to {size}");
                if old > 0 {
                    let p = store.consistency_proof(&id, old, size).unwrap();
                    assert_eq!(
                        verify_consistency(&Blake3Hasher, old, size, &p, &old_root, &mem.root()),
                        Ok(()),
                        "{ctx}: {old} -> {size}"
                    );
                }
            }
            previous.insert(c, (size, mem.root()));
        }
        eprintln!(
            "cycle {cycle}: {reports} durable reports, sizes {sizes:?}, {:?} elapsed",
            started.elapsed()
        );
    }
    // The kills must have interrupted real work, or nothing was tested.
    assert!(
        total_reports > 0,
        "the child never reported a durable append"
    );
    assert!(previous.values().map(|p| p.0).sum::<u64>() > 0);
}
