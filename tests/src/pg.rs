//! A throwaway PostgreSQL 15 for the cluster tests (spec/CLUSTER.md): tally-store-pg's
//! throwaway server (the one its own tests and `tally demo --cluster` use), driven from async
//! tests, with what a fault test needs on top: the address (to put a
//! [`crate::tcp_proxy::TcpProxy`] in front of it) and a crash and restart on the same data
//! directory and port.

use std::net::SocketAddr;

use tally_store_pg::throwaway::PgServer;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A PostgreSQL server in a temporary directory, listening on 127.0.0.1 only; stopped with
/// `pg_ctl stop -m immediate` when dropped. A missing PostgreSQL fails the test (run
/// `bash tools/install-postgres.sh`); it never skips.
pub struct Postgres {
    server: PgServer,
}

impl Postgres {
    /// initdb, start and create the `tally` database (a few seconds of initdb, off the
    /// runtime's workers).
    pub async fn start() -> Postgres {
        let started = ok(
            "starting PostgreSQL",
            tokio::task::spawn_blocking(PgServer::start).await,
        );
        Postgres {
            server: ok("starting PostgreSQL", started),
        }
    }

    /// The libpq connection string of the `tally` database.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The libpq connection string of the `tally` database at another port on this host
    /// (a proxy in front of this server).
    pub fn url_via(&self, port: u16) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname=tally")
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.server.port()))
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, every
    /// connection dropped). Blocks this worker while `pg_ctl` runs: multi-thread runtimes
    /// only.
    pub async fn stop_immediate(&self) {
        ok(
            "pg_ctl stop -m immediate",
            tokio::task::block_in_place(|| self.server.stop_immediate()),
        );
    }

    /// Starts it again on the same data directory and port; crash recovery replays the WAL.
    /// Multi-thread runtimes only, as [`Self::stop_immediate`].
    pub async fn start_again(&self) {
        ok(
            "pg_ctl start",
            tokio::task::block_in_place(|| self.server.pg_ctl_start()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::Postgres;

    async fn answers(pg: &Postgres) -> bool {
        match tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                client.simple_query("SELECT 1").await.is_ok()
            }
            Err(_) => false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_crashes_and_comes_back_on_its_port() {
        let pg = Postgres::start().await;
        assert!(answers(&pg).await, "the fresh server does not answer");
        assert!(pg.url().contains(&format!("port={}", pg.addr().port())));
        pg.stop_immediate().await;
        assert!(!answers(&pg).await, "the stopped server still answers");
        pg.start_again().await;
        assert!(answers(&pg).await, "the restarted server does not answer");
    }
}
