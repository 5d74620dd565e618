//! `tally demo --cluster N`: cluster mode on one machine (spec/CLUSTER.md). A throwaway
//! PostgreSQL, a local chain, N `tally serve` processes sharing one provider's channels
//! through the database, and a round-robin load balancer in front of them. A client pays
//! through the balancer (most requests reach a node that forwards them to the channel's
//! owner); then the owner is killed with SIGKILL and the client keeps paying until another
//! node has taken the channel's shard over (the failover time is measured); finally the log in
//! the database is checked: the client's mirror agrees with it (a checkpoint both sides sign),
//! and the epochs that wrote it increase along the log (the dead owner wrote nothing after the
//! takeover).

mod balancer;
mod nodes;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_client::ClientError;
use tally_http::headers::EPOCH;
use tally_store_pg::PgStore;

use crate::error::{CliError, Result};
use crate::output::Output;
use crate::{chain, keys, upstream};
use balancer::Balancer;
use nodes::Nodes;

/// Shards of the demo's database: few, so the demo's one channel shares its shard's lease
/// with nothing else and the takeover is easy to follow.
const SHARDS: u16 = 8;
/// Lease length: the failover the demo shows takes about this long.
const LEASE_MS: u64 = 1500;
/// Calls in flight at once (one lane each).
const LANES: usize = 4;

/// What the cluster demo did and measured.
#[derive(Debug, Serialize)]
pub struct ClusterSummary {
    /// Gateway nodes started.
    pub nodes: usize,
    /// Paid calls with a receipt.
    pub calls: u64,
    /// The `TALLY-EPOCH` values (`shard.epoch`) on the receipts the client got.
    pub epochs_seen: Vec<String>,
    /// The channel's shard.
    pub shard: u32,
    /// The owner killed, and its epoch.
    pub killed: String,
    /// The epoch before and after the takeover.
    pub epoch_before: u64,
    /// The new owner's epoch.
    pub epoch_after: u64,
    /// From the SIGKILL to the channel's next receipt through another node.
    pub failover_ms: u64,
    /// `(epoch, first index, records)` along the channel's log in the database.
    pub writers: Vec<(u64, u64, u64)>,
    /// The checkpoint both sides signed at the end: size and root.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// Seconds the demo took.
    pub seconds: f64,
}

impl ClusterSummary {
    /// The human summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "cluster demo: {} nodes, {} paid calls through a round-robin balancer\n",
            self.nodes, self.calls
        );
        s += &format!(
            "  channel shard {}: owner {} at epoch {} killed with SIGKILL; epoch {} took over in {} ms (lease {} ms)\n",
            self.shard, self.killed, self.epoch_before, self.epoch_after, self.failover_ms, LEASE_MS
        );
        for (epoch, first, n) in &self.writers {
            s += &format!("  epoch {epoch} wrote records {first}..{}\n", first + n);
        }
        s += &format!(
            "  both sides signed a checkpoint at size {} (root {}); epochs increase along the log\n",
            self.size, self.root
        );
        s += &format!("  done in {:.1} s\n", self.seconds);
        s
    }
}

fn step(out: &Output, n: u32, text: &str) {
    out.note(&format!("[{n}/7] {text}"));
}

/// Runs the cluster demo with `nodes` gateway processes and `calls` paid calls.
pub async fn run(nodes: usize, calls: u64, out: Output) -> Result<ClusterSummary> {
    if !(2..=8).contains(&nodes) || calls < 10 {
        return Err(CliError::Usage(
            "--cluster takes 2 to 8 nodes, and --calls at least 10".into(),
        ));
    }
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("tally-cluster-demo-")
        .tempdir()
        .map_err(|e| CliError::io(Path::new("temporary directory"), e))?;
    let dir = temp.path();
    let pg = tally_store_pg::throwaway::PgServer::start()
        .map_err(|e| CliError::Service(e.to_string()))?;
    let db = PgStore::connect(&pg.url(), SHARDS)
        .await
        .map_err(|e| CliError::Service(format!("cluster database: {e}")))?;
    db.init()
        .await
        .map_err(|e| CliError::Service(format!("cluster database: {e}")))?;
    step(&out, 1, &format!("PostgreSQL on 127.0.0.1:{}", pg.port()));
    let note = |t: &str| out.note(t);
    let local = chain::start_local(u128::MAX / 4, &note).await?;
    let chain_id = chain::reader(&local.rpc, local.contract).await?.chain_id();
    step(
        &out,
        2,
        &format!("anvil; Tally deployed at {}", local.contract),
    );
    let upstream = upstream::start().await?;
    let mut cluster = Nodes::start(dir, nodes, &pg.url(), &local, chain_id, &upstream.url())?;
    cluster.wait_ready().await?;
    let lb = Balancer::start(cluster.addrs()).await?;
    step(
        &out,
        3,
        &format!(
            "{nodes} nodes ({}) behind a balancer on {}",
            cluster.urls().join(", "),
            lb.url()
        ),
    );
    let result = paid_part(&out, dir, &mut cluster, &lb, &db, &local, chain_id, calls).await;
    cluster.stop();
    upstream.stop().await;
    let mut summary = result?;
    summary.nodes = nodes;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn paid_part(
    out: &Output,
    dir: &Path,
    cluster: &mut Nodes,
    lb: &Balancer,
    db: &PgStore,
    local: &chain::LocalChain,
    chain_id: u64,
    calls: u64,
) -> Result<ClusterSummary> {
    let pdir = dir.join("client");
    std::fs::create_dir_all(&pdir).map_err(|e| CliError::io(&pdir, e))?;
    keys::write_ed25519(&pdir.join("session.key"), &keys::generate_ed25519())?;
    let checkpoint_key = keys::generate_secp256k1();
    keys::write_secp256k1(&pdir.join("checkpoint.key"), &checkpoint_key)?;
    let (channel, _) = chain::open_channel(
        &local.rpc,
        local.contract,
        &local.payer,
        local.payee.address(),
        checkpoint_key.address(),
        chain::OpenTerms {
            token: local.token,
            deposit: crate::demo::DEPOSIT,
            withdraw_delay: chain::DEFAULT_WITHDRAW_DELAY,
            salt: chain::random_salt(),
        },
    )
    .await?;
    let client = super::save_profile(&pdir, &lb.url(), channel, local, chain_id)?
        .connect()
        .await?;
    let shard = tally_store_pg::shard_of(&channel, SHARDS);
    step(
        out,
        4,
        &format!(
            "opened channel {} (shard {shard}); paying {calls} calls",
            channel.to_hex()
        ),
    );
    let mut epochs = std::collections::BTreeSet::new();
    pay(&client, calls / 2, &mut epochs).await?;
    let before = db
        .holder(shard)
        .await
        .map_err(|e| CliError::Service(format!("reading the lease: {e}")))?
        .ok_or_else(|| CliError::Verification("the channel's shard has no owner".into()))?;
    let killed = cluster.kill_owner(&before)?;
    let t = Instant::now();
    step(
        out,
        5,
        &format!(
            "SIGKILLed {killed}, the owner of shard {shard} at epoch {}; paying on",
            before.epoch
        ),
    );
    let first_after = pay_until_served(&client, &mut epochs).await?;
    let failover_ms = first_after.duration_since(t).as_millis() as u64;
    pay(&client, calls - calls / 2 - 1, &mut epochs).await?;
    let after = db
        .holder(shard)
        .await
        .map_err(|e| CliError::Service(format!("reading the lease: {e}")))?
        .ok_or_else(|| CliError::Verification("the channel's shard has no owner".into()))?;
    step(
        out,
        6,
        &format!(
            "{} took shard {shard} over at epoch {} after {failover_ms} ms",
            after.node, after.epoch
        ),
    );
    client.flush().await?;
    let cp = client.checkpoint().await?;
    let writers = db
        .writers(&channel)
        .await
        .map_err(|e| CliError::Service(format!("reading the log: {e}")))?;
    check_writers(&writers, cp.checkpoint.size, before.epoch, after.epoch)?;
    step(
        out,
        7,
        "checked: a checkpoint both sides signed, and epochs only increase along the log",
    );
    Ok(ClusterSummary {
        nodes: 0,
        calls,
        epochs_seen: epochs.into_iter().collect(),
        shard,
        killed,
        epoch_before: before.epoch,
        epoch_after: after.epoch,
        failover_ms,
        writers,
        size: cp.checkpoint.size,
        root: cp.checkpoint.root.to_hex(),
        seconds: 0.0,
    })
}

/// The database's log after the takeover: contiguous runs from index 0 to `size`, one per
/// epoch, epochs increasing; the killed owner's epoch (`before`) ends where the new owner's
/// (`after`) begins. Pure, so the rule is tested on its own.
fn check_writers(writers: &[(u64, u64, u64)], size: u64, before: u64, after: u64) -> Result<()> {
    let bad = |why: String| Err(CliError::Verification(why));
    let mut next = 0;
    let mut last_epoch = 0;
    for (epoch, first, n) in writers {
        if *first != next || *epoch <= last_epoch {
            return bad(format!(
                "the log's writers are not one increasing run each: {writers:?}"
            ));
        }
        next = first + n;
        last_epoch = *epoch;
    }
    if next != size {
        return bad(format!(
            "the database holds {next} records, the checkpoint {size}"
        ));
    }
    let epochs: Vec<u64> = writers.iter().map(|w| w.0).collect();
    if !epochs.contains(&before) || epochs.last() != Some(&after) || after <= before {
        return bad(format!(
            "expected epoch {before} then {after} along the log, found {epochs:?}"
        ));
    }
    Ok(())
}

/// `n` paid calls, `LANES` at a time; every call must get a receipt.
async fn pay(
    client: &tally_client::Client,
    n: u64,
    epochs: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    let mut running = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < n || !running.is_empty() {
        while next < n && running.len() < LANES {
            let c = client.clone();
            let i = next;
            running.spawn(async move { c.get(&format!("/v1/items/{i}")).send().await });
            next += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let resp = joined.map_err(|e| CliError::Service(format!("call task: {e}")))??;
        if resp.receipt.is_none() {
            return Err(CliError::Verification(
                "a paid call came back without a receipt".into(),
            ));
        }
        if let Some(e) = resp.headers.get(EPOCH).and_then(|v| v.to_str().ok()) {
            epochs.insert(e.to_string());
        }
    }
    Ok(())
}

/// Pays one call at a time until one gets a receipt (the shard has a live owner again);
/// refusals and transport failures while the dead owner's lease runs out are expected.
async fn pay_until_served(
    client: &tally_client::Client,
    epochs: &mut std::collections::BTreeSet<String>,
) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_millis(LEASE_MS * 20);
    let mut i = 0u64;
    loop {
        i += 1;
        match client.get(&format!("/v1/items/failover-{i}")).send().await {
            Ok(resp) if resp.receipt.is_some() => {
                if let Some(e) = resp.headers.get(EPOCH).and_then(|v| v.to_str().ok()) {
                    epochs.insert(e.to_string());
                }
                return Ok(Instant::now());
            }
            Ok(resp) => {
                return Err(CliError::Verification(format!(
                    "a paid call answered {} without a receipt",
                    resp.status
                )))
            }
            Err(ClientError::Refused { .. } | ClientError::Http(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Err(CliError::Service(
                "no node took the dead owner's shard over in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_must_be_increasing_contiguous_runs_ending_with_the_new_owner() {
        assert!(check_writers(&[(1, 0, 5), (2, 5, 3)], 8, 1, 2).is_ok());
        // A gap, an overlap, an old epoch after a new one, a short log, no takeover.
        assert!(check_writers(&[(1, 0, 5), (2, 6, 3)], 9, 1, 2).is_err());
        assert!(check_writers(&[(1, 0, 5), (2, 4, 3)], 7, 1, 2).is_err());
        assert!(check_writers(&[(2, 0, 5), (1, 5, 3)], 8, 2, 1).is_err());
        assert!(check_writers(&[(1, 0, 5), (2, 5, 3)], 9, 1, 2).is_err());
        assert!(check_writers(&[(1, 0, 8)], 8, 1, 1).is_err());
    }
}
