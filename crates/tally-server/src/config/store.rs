//! `[store]`: where the log and the side state live (spec/CLUSTER.md §10). sled in the data
//! directory is the default (one node, nothing to install); `postgres` is cluster mode, in
//! which several nodes share one provider's channels through one database.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::StartError;

/// Which store backs the gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// sled databases under `data_dir`: one node.
    #[default]
    Sled,
    /// One PostgreSQL database shared by every node of the provider (spec/CLUSTER.md).
    Postgres,
}

/// The `[store]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sled` (the default) or `postgres`.
    #[serde(default)]
    pub kind: StoreKind,
    /// The database, as a libpq key=value string (`host=… port=… user=… dbname=…`), no
    /// password: put it in `password_file`. Required for `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the database password (mode 0600 or refused), relative to the config
    /// file; it never reaches a log line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Shards channels are grouped into; fixed for the database's life (CLUSTER.md §3).
    #[serde(default = "default_shards")]
    pub shards: u16,
    /// How long a shard lease lasts without renewal, ms; renewed every third of it. A dead
    /// node's channels wait this long for a new owner (CLUSTER.md §8).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// This node's base URL as the other nodes reach it (`http://10.0.0.5:8080`): requests
    /// for channels this node owns are forwarded there (CLUSTER.md §7). Required for
    /// `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_url: Option<String>,
}

fn default_shards() -> u16 {
    64
}
fn default_lease_ms() -> u64 {
    5000
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sled,
            url: None,
            password_file: None,
            shards: default_shards(),
            lease_ms: default_lease_ms(),
            node_url: None,
        }
    }
}

/// What a `postgres` store needs, checked: the database with its password, and this node's
/// place in the cluster.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// The database (its `Debug` shows nothing of it).
    pub target: tally_store_pg::Target,
    /// Shards (CLUSTER.md §3).
    pub shards: u16,
    /// Lease length, ms.
    pub lease_ms: u64,
    /// This node's base URL for forwarded requests.
    pub node_url: String,
}

/// Shortest lease accepted: renewals run every third of it, and a database round trip
/// must fit well inside that.
pub const MIN_LEASE_MS: u64 = 300;
/// Longest lease accepted: a dead node's channels wait this long for a new owner.
pub const MAX_LEASE_MS: u64 = 60_000;
/// Most shards: a node renews each lease it holds every third of `lease_ms`, one statement
/// each, and a stranger's requests for random channels can make it take every free shard.
pub const MAX_SHARDS: u16 = 1024;

impl StoreConfig {
    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &self.password_file {
            if p.is_relative() {
                self.password_file = Some(base.join(p));
            }
        }
    }

    /// The checked PostgreSQL settings, `None` for sled. Refuses a `postgres` store without
    /// `url` or `node_url`, a `node_url` that is not `http://`, shards outside
    /// 1..=[`MAX_SHARDS`], a lease outside [`MIN_LEASE_MS`]..=[`MAX_LEASE_MS`], and a `url`
    /// that does not parse or carries a password (it belongs in `password_file`, where it is
    /// kept out of the config file and of every log line).
    pub fn postgres(&self) -> Result<Option<PgSettings>, StartError> {
        if self.kind == StoreKind::Sled {
            if self.url.is_some() || self.node_url.is_some() || self.password_file.is_some() {
                return Err(StartError::Config(
                    "store.url, store.node_url and store.password_file need store.kind = \"postgres\""
                        .into(),
                ));
            }
            return Ok(None);
        }
        let bad = |why: &str| Err(StartError::Config(format!("[store]: {why}")));
        let Some(url) = &self.url else {
            return bad("kind = \"postgres\" needs url");
        };
        if let Err(why) = tally_store_pg::Target::check_url(url) {
            return bad(&why);
        }
        let Some(node_url) = &self.node_url else {
            return bad("kind = \"postgres\" needs node_url (where other nodes forward to)");
        };
        // Forwarding between nodes is plain HTTP on the private network (CLUSTER.md §7).
        if !node_url.starts_with("http://") {
            return bad("node_url must be an http:// URL (nodes forward over plain HTTP)");
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return bad(&format!("shards must be in 1..={MAX_SHARDS}"));
        }
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&self.lease_ms) {
            return bad(&format!(
                "lease_ms must be in {MIN_LEASE_MS}..={MAX_LEASE_MS}"
            ));
        }
        let password = match &self.password_file {
            Some(file) => Some(
                super::read_secret_file(file)?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        Ok(Some(PgSettings {
            target: tally_store_pg::Target {
                url: url.clone(),
                password,
            },
            shards: self.shards,
            lease_ms: self.lease_ms,
            node_url: node_url.trim_end_matches('/').to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str, node: Option<&str>) -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Postgres,
            url: Some(url.into()),
            node_url: node.map(Into::into),
            ..StoreConfig::default()
        }
    }

    #[test]
    fn sled_is_the_default_and_needs_nothing() {
        assert!(StoreConfig::default().postgres().unwrap().is_none());
    }

    #[test]
    fn postgres_keys_without_postgres_are_refused() {
        let c = StoreConfig {
            url: Some("host=x".into()),
            ..StoreConfig::default()
        };
        assert!(c.postgres().is_err());
    }

    #[test]
    fn postgres_needs_url_and_node_url_and_no_inline_password() {
        assert!(pg("host=127.0.0.1", None).postgres().is_err());
        assert!(pg("host=127.0.0.1 password=x", Some("http://a:1"))
            .postgres()
            .is_err());
        assert!(pg("postgresql://u:pw@db/tally", Some("http://a:1"))
            .postgres()
            .is_err());
        assert!(
            pg("postgresql://u@db/tally?password=pw", Some("http://a:1"))
                .postgres()
                .is_err()
        );
        assert!(pg("host=127.0.0.1", Some("a:1")).postgres().is_err());
        assert!(pg("host=127.0.0.1", Some("https://a:1"))
            .postgres()
            .is_err());
        assert!(pg("postgresql://u@db/tally", Some("http://a:1"))
            .postgres()
            .is_ok());
        let ok = pg("host=127.0.0.1", Some("http://a:1/"))
            .postgres()
            .unwrap()
            .unwrap();
        assert_eq!(ok.node_url, "http://a:1");
        assert_eq!(ok.shards, 64);
        assert!(
            !format!("{ok:?}").contains("host="),
            "the url stays out of Debug"
        );
    }

    #[test]
    fn leases_and_shards_out_of_range_are_refused() {
        let mut c = pg("host=127.0.0.1", Some("http://a:1"));
        c.lease_ms = MIN_LEASE_MS - 1;
        assert!(c.postgres().is_err());
        c.lease_ms = MAX_LEASE_MS + 1;
        assert!(c.postgres().is_err());
        c.lease_ms = MIN_LEASE_MS;
        c.shards = 0;
        assert!(c.postgres().is_err());
        c.shards = MAX_SHARDS + 1;
        assert!(c.postgres().is_err());
        c.shards = MAX_SHARDS;
        assert!(c.postgres().is_ok());
    }

    #[test]
    fn the_password_file_is_kept_apart_from_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "it's\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = pg("host=127.0.0.1", Some("http://a:1"));
        c.password_file = Some(file);
        let s = c.postgres().unwrap().unwrap();
        assert_eq!(s.target.password.as_deref(), Some("it's"));
        assert_eq!(s.target.url, "host=127.0.0.1");
        assert!(
            !format!("{s:?}").contains("it's"),
            "the password stays out of Debug"
        );
    }
}
