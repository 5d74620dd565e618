//! A real PostgreSQL 15 for the tests: tally-store-pg's throwaway server (initdb in a
//! temporary directory, 127.0.0.1 only, stopped on drop), failing the test on any error. A
//! missing PostgreSQL fails the test (`bash tools/install-postgres.sh` installs it); it never
//! skips. Each test binary uses part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub struct PgServer(tally_store_pg::throwaway::PgServer);

impl PgServer {
    /// initdb, start, create the `tally` database.
    pub fn start() -> PgServer {
        match tally_store_pg::throwaway::PgServer::start() {
            Ok(s) => PgServer(s),
            Err(e) => panic!("{e}"),
        }
    }

    /// The connection string for the `tally` database.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint).
    pub fn stop_immediate(&self) {
        if let Err(e) = self.0.stop_immediate() {
            panic!("{e}");
        }
    }

    /// Starts the server again on the same directory and port (crash recovery runs).
    pub fn pg_ctl_start(&self) {
        if let Err(e) = self.0.pg_ctl_start() {
            panic!("{e}");
        }
    }
}
