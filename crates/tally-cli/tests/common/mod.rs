//! Shared helpers of the CLI tests: run the built `tally` binary and read its results.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The binary under test.
pub fn tally() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tally"))
}

/// Runs `tally args…`, returning the output.
pub fn run(args: &[&str]) -> Output {
    match tally().args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("running tally {args:?}: {e}"),
    }
}

/// The exit code.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams on failure.
pub fn expect(o: &Output, want: i32) {
    assert_eq!(
        code(o),
        want,
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Stdout parsed as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    match serde_json::from_slice(&o.stdout) {
        Ok(v) => v,
        Err(e) => panic!(
            "stdout is not JSON ({e}):\n{}\n--- stderr\n{}",
            stdout(o),
            stderr(o)
        ),
    }
}

/// A temporary directory.
pub fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

/// A demo run with its artifacts kept, shared by the offline tests (made once).
pub struct Kept {
    /// The artifacts' directory.
    pub dir: PathBuf,
    /// The demo's JSON summary.
    pub summary: serde_json::Value,
    _root: tempfile::TempDir,
}

/// Paid calls of the shared demo run.
pub const KEPT_CALLS: u64 = 60;

/// Records in the kept demo's log: its calls, the calls it made after the claim (which the
/// dispute's credit nets against), and the credit.
pub fn kept_log_size() -> u64 {
    KEPT_CALLS
        + kept().summary["calls_after_claim"]
            .as_u64()
            .unwrap_or_else(|| panic!("no calls_after_claim in the summary"))
        + 1
        + kept().summary["streamed"]["completions"]
            .as_u64()
            .unwrap_or_else(|| panic!("no streamed completions in the summary"))
}

/// Runs `tally --json demo --keep DIR` once per test binary.
pub fn kept() -> &'static Kept {
    static KEPT: OnceLock<Kept> = OnceLock::new();
    KEPT.get_or_init(|| {
        let root = tmp();
        let dir = root.path().join("demo");
        let calls = KEPT_CALLS.to_string();
        let o = run(&["--json", "demo", "--calls", &calls, "--keep", path(&dir)]);
        expect(&o, 0);
        Kept {
            summary: json(&o),
            dir,
            _root: root,
        }
    })
}

/// A path as &str.
pub fn path(p: &Path) -> &str {
    match p.to_str() {
        Some(s) => s,
        None => panic!("non-UTF-8 path {}", p.display()),
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    if let Err(e) = std::fs::create_dir_all(to) {
        panic!("mkdir {}: {e}", to.display());
    }
    let entries = match std::fs::read_dir(from) {
        Ok(e) => e,
        Err(e) => panic!("read_dir {}: {e}", from.display()),
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let dest = to.join(entry.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else if let Err(e) = std::fs::copy(&p, &dest) {
            panic!("copy {}: {e}", p.display());
        }
    }
}

/// Reads a file.
pub fn read(p: &Path) -> String {
    match std::fs::read_to_string(p) {
        Ok(s) => s,
        Err(e) => panic!("read {}: {e}", p.display()),
    }
}

/// Writes a file.
pub fn write(p: &Path, text: &str) {
    if let Err(e) = std::fs::write(p, text) {
        panic!("write {}: {e}", p.display());
    }
}

/// A `tally serve` child process; killed when dropped.
pub struct Serve {
    child: std::process::Child,
    /// The stderr lines it printed up to and including its "listening on" line.
    pub startup: Vec<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Interrupts it like Ctrl-C and waits for the graceful exit; returns its exit code.
    pub fn interrupt(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let code = self
            .child
            .wait()
            .map(|s| s.code().unwrap_or(-1))
            .unwrap_or(-1);
        std::mem::forget(self);
        code
    }
}

/// A free loopback port (bound, read, released: the gateway binds it right after).
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("free port: {e}"),
    }
}

/// Starts `tally serve --config CONFIG` and waits for its "listening on" line on stderr,
/// keeping the lines before it; stderr is drained afterwards so the child never blocks.
pub fn start_serve(config: &Path) -> Serve {
    use std::io::{BufRead, BufReader};
    let mut child = match tally()
        .args(["serve", "--config", path(config)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("spawn serve: {e}"),
    };
    let err = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut serve = Serve {
        child,
        startup: Vec::new(),
    };
    let mut lines = BufReader::new(err).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                let done = line.contains("listening on ");
                serve.startup.push(line);
                if done {
                    break;
                }
            }
            _ => panic!("serve exited before listening: {:?}", serve.startup),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    serve
}

/// Rewrites line `line` (0 = header) of a statement with `f`.
pub fn tamper(src: &Path, dst: &Path, line: usize, f: impl Fn(&mut serde_json::Value)) {
    let text = read(src);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut v: serde_json::Value = match serde_json::from_str(&lines[line]) {
        Ok(v) => v,
        Err(e) => panic!("line {line}: {e}"),
    };
    f(&mut v);
    lines[line] = v.to_string();
    write(dst, &(lines.join("\n") + "\n"));
}

/// Changes the record bytes of a statement record line (its `record` hex) with `f`.
pub fn edit_record(v: &mut serde_json::Value, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = hex::decode(v["record"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("record hex: {e}"));
    f(&mut bytes);
    v["record"] = serde_json::Value::String(hex::encode(bytes));
}
