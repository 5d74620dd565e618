//! The standalone gateway as a separate OS process (`tally-e2e-gateway`, which runs
//! `tally_server::standalone::run` exactly as `tally serve` does), for tests that crash it,
//! restart it, or attack it from outside.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The gateway as a child process of this test. Dropping it SIGKILLs it by its own pid, so a
/// failing test leaves nothing running.
pub struct GatewayProcess {
    bin: PathBuf,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// The gateway's base URL.
    pub url: String,
    /// How many times it was started.
    pub starts: usize,
}

impl GatewayProcess {
    /// `bin` is the gateway executable: `env!("CARGO_BIN_EXE_tally-e2e-gateway")` in an
    /// integration test of this package.
    pub fn new(bin: &str, config: PathBuf, log: PathBuf, url: String) -> Self {
        GatewayProcess {
            bin: PathBuf::from(bin),
            child: None,
            config,
            log,
            url,
            starts: 0,
        }
    }

    /// Starts the process and waits until `/healthz` answers; returns how long that took.
    pub async fn start(&mut self) -> Duration {
        assert!(self.child.is_none(), "the gateway is already running");
        let t = Instant::now();
        let log = ok(
            "gateway log",
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log),
        );
        let child = ok(
            "spawning the gateway",
            Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn(),
        );
        self.child = Some(child);
        self.starts += 1;
        let http = ok(
            "http",
            reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build(),
        );
        while t.elapsed() < Duration::from_secs(15) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "the gateway exited at start ({status}): {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await {
                if r.status() == 200 {
                    return t.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the gateway did not come up in 15 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGKILL (no shutdown path runs) and reap it.
    pub fn crash(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("no gateway to crash");
        };
        ok("SIGKILL", child.kill());
        let status = ok("waiting for the killed gateway", child.wait());
        assert_eq!(status.signal(), Some(9), "the gateway ended by {status}");
    }
}

impl GatewayProcess {
    /// The running process's id.
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(c) => c.id(),
            None => panic!("the gateway is not running"),
        }
    }

    /// SIGSTOP: the process freezes mid-whatever (a long GC pause, a VM stall); the kernel
    /// still accepts connections on its listening socket.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`]: it resumes where it stopped, unaware of the time lost.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let status = ok(
            "kill",
            Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.pid().to_string())
                .status(),
        );
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl GatewayProcess {
    /// Everything the process wrote to stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = ok("probe port", std::net::TcpListener::bind("127.0.0.1:0"));
    ok("probe addr", l.local_addr()).port()
}
