//! Failover in the cluster scenario (issue 15, spec/CLUSTER.md §8): every channel keeps
//! paying through the balancer while the node owning the busy channel's shard is SIGKILLed
//! (then, three times, the owner of the moment is SIGSTOPped and resumed); measured is the time from the signal to
//! the busy channel's first paid call served at a new epoch (`TALLY-EPOCH`), i.e. by
//! another node. The balancer stops sending to the signalled node at once, as a health
//! check would; requests already forwarded to it, and forwards from nodes that still trust
//! its lease, fail or wait until it expires (`lease_ms`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_client::{Client, ClientError};
use tally_e2e::TestChannel;
use tally_http::Reason;

use crate::child::Gateway;
use crate::cluster_lb::Balancer;
use crate::cluster_nodes::{shard_of, World, LEASE_MS};
use crate::report::PAID;

/// What the paying loops saw.
#[derive(Default)]
struct Seen {
    /// Successful calls: when, and `TALLY-EPOCH`.
    ok: Vec<(Instant, Option<(u32, u64)>)>,
    unavailable: usize,
    transport: usize,
    lost: usize,
    other: Vec<String>,
}

/// Pays on `c` until `stop`, filing every outcome in `seen`; failures are retried after
/// 20 ms with a new request (a lost one is resynced by the client).
async fn keep_paying(c: Client, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    while !stop.load(Ordering::Relaxed) {
        let r = c.post(PAID).body("payload").send().await;
        let failed = {
            let Ok(mut s) = seen.lock() else { return };
            match r {
                Ok(r) if r.status == 200 => {
                    let epoch = r.headers.get(tally_http::headers::EPOCH);
                    let epoch = epoch.and_then(|v| v.to_str().ok()).and_then(parse_epoch);
                    s.ok.push((Instant::now(), epoch));
                    false
                }
                Ok(r) => {
                    s.other.push(format!("status {}", r.status));
                    true
                }
                Err(ClientError::Refused {
                    reason: Reason::StoreUnavailable | Reason::Overloaded,
                    ..
                }) => {
                    s.unavailable += 1;
                    true
                }
                Err(ClientError::Http(_)) => {
                    s.transport += 1;
                    true
                }
                Err(ClientError::ResponseLost { .. }) => {
                    s.lost += 1;
                    true
                }
                Err(e) => {
                    s.other.push(e.to_string());
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// SIGSTOP rounds after the SIGKILL: the owner of the moment is stopped, measured, resumed.
const STOP_ROUNDS: usize = 3;

/// A `TALLY-EPOCH` value, `<shard>.<epoch>` (spec/CLUSTER.md §6).
fn parse_epoch(value: &str) -> Option<(u32, u64)> {
    let (shard, epoch) = value.trim().split_once('.')?;
    Some((shard.parse().ok()?, epoch.parse().ok()?))
}

/// Keeps every channel paying, SIGKILLs the busy channel's owner, then SIGSTOPs the next
/// owner and resumes it; prints each failover and what the clients saw.
pub async fn failovers(
    world: &World,
    lb: &Balancer,
    nodes: &mut [Option<Gateway>],
    clients: &[Client],
    chans: &[TestChannel],
    urls: &[String],
) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<Mutex<Seen>>> = clients.iter().map(|_| Arc::default()).collect();
    let tasks: Vec<_> = clients
        .iter()
        .zip(&seen)
        .map(|(c, s)| tokio::spawn(keep_paying(c.clone(), stop.clone(), s.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "failover (lease_ms {LEASE_MS}; every channel paying through the balancer, one call at a time):"
    );
    let _ = fault(world, lb, nodes, &chans[0], urls, &seen[0], "KILL").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..STOP_ROUNDS {
        let Some(i) = fault(world, lb, nodes, &chans[0], urls, &seen[0], "STOP").await else {
            break;
        };
        if let Some(n) = nodes[i].as_ref() {
            n.signal("CONT");
        }
        lb.set_alive(i, true);
        let before = totals(&seen);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = totals(&seen);
        println!(
            "  after SIGCONT of node {i}, back in the rotation for 3 s: {} paid calls, {} answered 503, \
             {} transport errors, {} lost responses, {} other errors",
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
            after.4 - before.4
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (ok, unavailable, transport, lost, other) = totals(&seen);
    println!(
        "  all channels during the failover runs: {ok} paid calls, {unavailable} answered 503, \
         {transport} transport errors, {lost} lost responses, {other} other errors"
    );
    for s in &seen {
        if let Ok(s) = s.lock() {
            for e in s.other.iter().take(3) {
                println!("  other error: {e}");
            }
        }
    }
}

/// `(ok, 503, transport, lost, other)` over every channel.
fn totals(seen: &[Arc<Mutex<Seen>>]) -> (usize, usize, usize, usize, usize) {
    let mut t = (0, 0, 0, 0, 0);
    for s in seen {
        if let Ok(s) = s.lock() {
            t.0 += s.ok.len();
            t.1 += s.unavailable;
            t.2 += s.transport;
            t.3 += s.lost;
            t.4 += s.other.len();
        }
    }
    t
}

/// Sends `signal` to the node owning `busy`'s shard (taken out of the balancer's rotation at
/// the same moment) and waits up to 30 s for `busy`'s first paid call at a newer epoch;
/// returns the signalled node. A killed node is reaped.
async fn fault(
    world: &World,
    lb: &Balancer,
    nodes: &mut [Option<Gateway>],
    busy: &TestChannel,
    urls: &[String],
    seen: &Mutex<Seen>,
    signal: &str,
) -> Option<usize> {
    let shard = shard_of(busy);
    let owner = world
        .owner_url(shard)
        .and_then(|u| urls.iter().position(|x| *x == u));
    let Some((owner, node)) = owner.and_then(|i| nodes[i].as_ref().map(|n| (i, n))) else {
        println!("  SIG{signal}: shard {shard} has no live owner among the running nodes; skipped");
        return None;
    };
    let snapshot = |s: &Seen| {
        let epoch = s.ok.iter().filter_map(|(_, e)| e.map(|e| e.1)).max();
        (epoch.unwrap_or(0), s.unavailable, s.transport, s.lost)
    };
    let (old, u0, t0, l0) = seen.lock().map(|s| snapshot(&s)).unwrap_or_default();
    let at = Instant::now();
    lb.set_alive(owner, false);
    node.signal(signal);
    let mut took = None;
    while at.elapsed() < Duration::from_secs(30) {
        if let Ok(s) = seen.lock() {
            took =
                s.ok.iter()
                    .find(|(t, e)| *t > at && e.is_some_and(|e| e.1 > old))
                    .map(|(t, e)| (*t - at, e.map_or(0, |e| e.1)));
        }
        if took.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, u1, t1, l1) = seen.lock().map(|s| snapshot(&s)).unwrap_or_default();
    let new_owner = world
        .owner_url(shard)
        .and_then(|u| urls.iter().position(|x| *x == u));
    match took {
        Some((d, epoch)) => println!(
            "  SIG{signal} of node {owner} (owner of the busy channel's shard {shard}, epoch {old}): \
             the channel's next paid call came {:.0} ms later, at epoch {epoch}, served by node {}; \
             meanwhile it got {} answers 503, {} transport errors, {} lost responses",
            d.as_secs_f64() * 1e3,
            new_owner.map_or("?".into(), |i| i.to_string()),
            u1 - u0,
            t1 - t0,
            l1 - l0
        ),
        None => {
            println!(
                "  SIG{signal} of node {owner} (shard {shard}, epoch {old}): NO paid call at a new epoch \
                 within 30 s ({} answers 503, {} transport errors, {} lost responses); lease owner now: \
                 node {}; the nodes' database sessions (pid|state|waiting for|transaction open s|statement):",
                u1 - u0,
                t1 - t0,
                l1 - l0,
                new_owner.map_or("?".into(), |i| i.to_string()),
            );
            for line in world.sessions().lines() {
                println!("    {line}");
            }
        }
    }
    if signal == "KILL" {
        if let Some(n) = nodes[owner].take() {
            n.stop();
        }
    }
    Some(owner)
}
