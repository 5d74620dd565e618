//! The audit's memory does not grow with the statement: statements of 100,000 and 300,000
//! records (both beyond ACK_WINDOW, so the sequence's window is full in both) are streamed
//! from disk, and the peak of live heap bytes during each audit is measured with a counting
//! allocator — exact and independent of timing, unlike RSS. The process's VmHWM is printed
//! for information.
//!
//! One test in this binary, so no other test's allocations are counted.

#[path = "support/gen.rs"]
mod gen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tally_audit::{audit, AuditContext, StatementReader};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded to the system allocator with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak live heap bytes above the level before the audit, while auditing `path`.
fn audit_peak(path: &std::path::Path, records: u64) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let report = audit(
        StatementReader::open(path).unwrap(),
        &AuditContext::default(),
        2,
    )
    .unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.records, records);
    peak
}

fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "800,000 signatures: run with --release, as CI does"
)]
fn audit_memory_does_not_grow_with_the_statement() {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for records in [100_000u64, 300_000] {
        let path = dir.path().join(format!("{records}.jsonl"));
        gen::write_file(gen::Options::new(records), &path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let peak = audit_peak(&path, records);
        eprintln!(
            "{records} records ({} MB): audit peak heap {:.1} MB; process VmHWM {:?} kB",
            size >> 20,
            peak as f64 / 1e6,
            vm_hwm_kb()
        );
        std::fs::remove_file(&path).unwrap();
        peaks.push(peak);
    }
    let (small, large) = (peaks[0], peaks[1]);
    // Three times the records, the same bounded state: the window, the lanes, the frontier
    // and a few chunks in flight. A whole-statement audit would need ~3x here.
    assert!(
        large < small + small / 4 + (4 << 20),
        "peak heap grew from {small} to {large} bytes"
    );
    assert!(large < 128 << 20, "peak heap {large} bytes");
}
