//! A real PostgreSQL 15 for the tests: initdb in a temporary directory, listening on
//! 127.0.0.1 only on a free port, stopped with `pg_ctl stop -m immediate` on drop. A missing
//! PostgreSQL fails the test (`bash tools/install-postgres.sh` installs it); it never skips.
//! Each test binary uses part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgServer {
    /// initdb, start, create the `tally` database.
    pub fn start() -> PgServer {
        let initdb = Path::new(BIN).join("initdb");
        assert!(
            initdb.exists(),
            "PostgreSQL 15 is missing ({}): run `bash tools/install-postgres.sh`",
            initdb.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("tally-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_postgres("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data));
        let server = PgServer {
            dir,
            port: free_port(),
        };
        server.pg_ctl_start();
        run(as_postgres("createdb")
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
            .args(["-U", "postgres", "tally"]));
        server
    }

    /// The connection string for the `tally` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=tally",
            self.port
        )
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint).
    pub fn stop_immediate(&self) {
        run(as_postgres("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }

    /// Starts the server again on the same directory and port (crash recovery runs).
    pub fn pg_ctl_start(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"]));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Best effort: the server may be stopped already (a test that crashed it).
        let _ = as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A PostgreSQL tool run as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(tool: &str) -> Command {
    let path = Path::new(BIN).join(tool);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
