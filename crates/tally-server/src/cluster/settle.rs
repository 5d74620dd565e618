//! Exactly one settlement worker across the cluster (spec/CLUSTER.md §9): the node holding
//! the settlement lease runs it; a node that loses the lease stops its worker, and another
//! node's loop starts one once the lease is free. The lease is a row of `tally_leases` like
//! the shards', so it has an epoch and expires when its holder dies or pauses.

use std::sync::Arc;
use std::time::Duration;

use tally_store_pg::PgNode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs a worker (started by `start`, stopped through the receiver it is given) while this
/// node holds the settlement lease, until `stopped` turns true. Checks every third of the
/// lease length.
pub async fn run_while_leader(
    node: Arc<PgNode>,
    mut stopped: watch::Receiver<bool>,
    start: impl Fn(watch::Receiver<bool>) -> JoinHandle<()>,
) {
    let every = Duration::from_millis((node.lease_ms() / 3).max(1));
    let mut running: Option<(watch::Sender<bool>, JoinHandle<()>)> = None;
    loop {
        let leader = match node.settlement_lease().await {
            Ok(lease) => lease.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "the settlement lease could not be read");
                // Without a word from the database, a lease this node held lapses on its own.
                node.held(u32::from(node.shards())).is_some()
            }
        };
        match (leader, running.is_some()) {
            (true, false) => {
                tracing::info!("this node holds the settlement lease: starting the worker");
                let (stop, rx) = watch::channel(false);
                running = Some((stop, start(rx)));
            }
            (false, true) => {
                tracing::warn!("the settlement lease moved: stopping this node's worker");
                stop_worker(running.take()).await;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => {}
        }
        if *stopped.borrow() {
            stop_worker(running.take()).await;
            return;
        }
    }
}

/// How long a stopped worker may take to finish its tick before it is aborted: the new
/// leaseholder's worker may already run, and the overlap must stay short (CLUSTER.md §9).
const STOP_WITHIN: Duration = Duration::from_secs(10);

async fn stop_worker(running: Option<(watch::Sender<bool>, JoinHandle<()>)>) {
    if let Some((stop, mut task)) = running {
        let _ = stop.send(true);
        match tokio::time::timeout(STOP_WITHIN, &mut task).await {
            Ok(Err(e)) => tracing::error!(error = %e, "settlement worker task failed"),
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!("the settlement worker did not stop in time; aborted");
                task.abort();
            }
        }
    }
}
