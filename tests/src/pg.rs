//! A throwaway PostgreSQL 15 for the cluster tests (spec/CLUSTER.md): the very server of
//! tally-store-pg's own tests (its `tests/support` module, included here rather than copied),
//! plus what a fault test needs on top: the port (to put a [`crate::tcp_proxy::TcpProxy`] in
//! front of it) and a crash and restart on the same data directory and port.

#[path = "../../crates/tally-store-pg/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

/// A PostgreSQL server in a temporary directory, listening on 127.0.0.1 only; stopped with
/// `pg_ctl stop -m immediate` when dropped. A missing PostgreSQL fails the test (run
/// `bash tools/install-postgres.sh`); it never skips.
pub struct Postgres {
    server: support::PgServer,
    port: u16,
}

impl Postgres {
    /// initdb, start and create the `tally` database (blocking: a few seconds of initdb).
    pub async fn start() -> Postgres {
        let server = match tokio::task::spawn_blocking(support::PgServer::start).await {
            Ok(s) => s,
            Err(e) => panic!("starting PostgreSQL: {e}"),
        };
        let port = port_of(&server.url());
        Postgres { server, port }
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
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, every
    /// connection dropped).
    pub async fn stop_immediate(&self) {
        tokio::task::block_in_place(|| self.server.stop_immediate());
    }

    /// Starts it again on the same data directory and port; crash recovery replays the WAL.
    pub async fn start_again(&self) {
        tokio::task::block_in_place(|| self.server.pg_ctl_start());
    }
}

/// The `port=` of a libpq key=value string.
fn port_of(url: &str) -> u16 {
    url.split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

#[cfg(test)]
mod tests {
    use super::{port_of, Postgres};

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
        assert_eq!(port_of(&pg.url()), pg.addr().port());
        pg.stop_immediate().await;
        assert!(!answers(&pg).await, "the stopped server still answers");
        pg.start_again().await;
        assert!(answers(&pg).await, "the restarted server does not answer");
    }

    #[test]
    fn the_port_is_read_from_the_libpq_string() {
        assert_eq!(
            port_of("host=127.0.0.1 port=5433 user=postgres dbname=tally"),
            5433
        );
    }
}
