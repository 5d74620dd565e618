//! Cluster mode from the command line, on a real PostgreSQL 15 (spec/CLUSTER.md): `tally db
//! init` creates the schema once and again without harm, refuses a database set up for another
//! shard count, and calls a sled config a usage error; `tally demo --cluster` runs nodes as
//! processes, kills the channel's owner and checks the failover and the log.

mod common;
#[path = "../../tally-store-pg/tests/support/mod.rs"]
mod pg;

use std::path::Path;

use common::*;
use tally_http::terms::ChainTerms;
use tally_server::config::{StoreConfig, StoreKind};

fn write_config(dir: &Path, name: &str, store: Option<StoreConfig>) -> String {
    let terms = ChainTerms {
        chain_id: 31337,
        contract: format!("0x{}", "11".repeat(20)),
        asset: format!("0x{}", "22".repeat(20)),
        pay_to: format!("0x{}", "33".repeat(20)),
    };
    let mut file = tally_cli::gateway::GatewayFile::new(
        "127.0.0.1:0",
        "http://127.0.0.1:9",
        "http://127.0.0.1:8545",
        terms,
        tally_cli::upstream::prices(),
    );
    file.store = store;
    let path = dir.join(name);
    file.write(&path).unwrap();
    path.display().to_string()
}

fn postgres(url: String, shards: u16) -> Option<StoreConfig> {
    Some(StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(url),
        shards,
        node_url: Some("http://127.0.0.1:1".into()),
        ..StoreConfig::default()
    })
}

#[test]
fn db_init_creates_the_schema_once_and_refuses_another_shard_count() {
    let server = pg::PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let eight = write_config(dir.path(), "eight.toml", postgres(server.url(), 8));
    for _ in 0..2 {
        let o = run(&["db", "init", "--config", &eight, "--json"]);
        expect(&o, 0);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["schema_version"], tally_store_pg::SCHEMA_VERSION);
        assert_eq!(v["shards"], 8);
    }
    let four = write_config(dir.path(), "four.toml", postgres(server.url(), 4));
    let o = run(&["db", "init", "--config", &four]);
    expect(&o, 2);
    assert!(stderr(&o).contains("8 shards"), "{}", stderr(&o));
}

#[test]
fn db_init_of_a_sled_config_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let sled = write_config(dir.path(), "sled.toml", None);
    let o = run(&["db", "init", "--config", &sled]);
    expect(&o, 2);
    assert!(stderr(&o).contains("needs no init"), "{}", stderr(&o));
}

/// The cluster demo end to end: three `tally serve` processes, the owner SIGKILLed, another
/// node takes the shard over at a higher epoch, and the log in the database is one
/// increasing run per epoch that both parties signed a checkpoint over.
#[test]
fn the_cluster_demo_fails_over_and_checks_the_log() {
    let o = run(&["--json", "demo", "--cluster", "3", "--calls", "200"]);
    expect(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["calls"], 200);
    let (before, after) = (v["epoch_before"].as_u64(), v["epoch_after"].as_u64());
    assert!(after > before, "{v}");
    let writers = v["writers"].as_array().cloned().unwrap_or_default();
    assert!(writers.len() >= 2, "two epochs wrote the log: {v}");
    let total: u64 = writers.iter().filter_map(|w| w[2].as_u64()).sum();
    assert_eq!(Some(total), v["size"].as_u64(), "{v}");
    assert!(v["failover_ms"].as_u64().is_some(), "{v}");
    // The receipts named the serving node's lease.
    let shard = v["shard"].as_u64().unwrap_or(u64::MAX);
    let seen = v["epochs_seen"].as_array().cloned().unwrap_or_default();
    assert!(
        seen.iter()
            .any(|e| e.as_str() == Some(&format!("{shard}.{}", after.unwrap_or(0)))),
        "{v}"
    );
}
