//! A throwaway PostgreSQL 15 server for demos and tests: `initdb` in a new temporary
//! directory, listening on 127.0.0.1 only on a free port, with `fsync` on, stopped with
//! `pg_ctl stop -m immediate` when dropped. Run as root (CI, containers), the tools run as the
//! `postgres` user, since `initdb` refuses root. Never for production data: the directory is
//! deleted with the value.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian's `postgresql-15` package puts the server tools.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Why the throwaway server could not be set up or driven.
#[derive(Debug, thiserror::Error)]
pub enum ThrowawayError {
    /// PostgreSQL 15's tools are not installed.
    #[error("PostgreSQL 15 is missing ({0}): run `bash tools/install-postgres.sh`")]
    Missing(String),
    /// A tool could not be run, or failed.
    #[error("{tool}: {detail}")]
    Tool {
        /// The tool.
        tool: String,
        /// Its error or output.
        detail: String,
    },
}

/// A running throwaway server with a `tally` database.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgServer {
    /// initdb, start, create the `tally` database.
    pub fn start() -> Result<PgServer, ThrowawayError> {
        let initdb = Path::new(BIN).join("initdb");
        if !initdb.exists() {
            return Err(ThrowawayError::Missing(initdb.display().to_string()));
        }
        let dir = tempfile::Builder::new()
            .prefix("tally-pg-")
            .tempdir()
            .map_err(|e| tool_error("tempdir", e))?;
        if is_root()? {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()))?;
        }
        let data = dir.path().join("data");
        run(as_postgres("initdb")?
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data))?;
        let server = PgServer {
            dir,
            port: free_port()?,
        };
        server.pg_ctl_start()?;
        run(as_postgres("createdb")?
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
            .args(["-U", "postgres", "tally"]))?;
        Ok(server)
    }

    /// The connection string for the `tally` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=tally",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint).
    pub fn stop_immediate(&self) -> Result<(), ThrowawayError> {
        run(as_postgres("pg_ctl")?.arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]))
        .map(drop)
    }

    /// Starts the server (again) on the same directory and port (crash recovery runs).
    pub fn pg_ctl_start(&self) -> Result<(), ThrowawayError> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        run(as_postgres("pg_ctl")?
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-o", &opts, "start"]))
        .map(drop)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Best effort: the server may be stopped already (a test that crashed it).
        if let Ok(mut cmd) = as_postgres("pg_ctl") {
            let _ = cmd
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

fn tool_error(tool: &str, e: impl std::fmt::Display) -> ThrowawayError {
    ThrowawayError::Tool {
        tool: tool.into(),
        detail: e.to_string(),
    }
}

/// A PostgreSQL tool run as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(tool: &str) -> Result<Command, ThrowawayError> {
    let path = Path::new(BIN).join(tool);
    Ok(if is_root()? {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    })
}

fn is_root() -> Result<bool, ThrowawayError> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| tool_error("id", e))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn run(cmd: &mut Command) -> Result<Output, ThrowawayError> {
    let tool = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|e| tool_error(&tool, e))?;
    if !out.status.success() {
        return Err(tool_error(
            &format!("{cmd:?}"),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(out)
}

fn free_port() -> Result<u16, ThrowawayError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| tool_error("a free port", e))
}
