//! The cluster demo's gateway nodes: `tally serve` child processes of this very binary, one
//! provider key, one chain, one database, each with its own port, `node_url` and log file.
//! Killing one is a real SIGKILL.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_server::config::{StoreConfig, StoreKind};
use tally_store_pg::Holder;

use super::{LEASE_MS, SHARDS};
use crate::error::{CliError, Result};
use crate::{chain, gateway, keys, upstream};

struct Node {
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

/// The running nodes; dropping them kills what still runs.
pub struct Nodes(Vec<Node>);

fn free_addr() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| CliError::Service(format!("a free port: {e}")))
}

impl Nodes {
    /// Writes each node's config (and the shared provider key) under `dir` and starts it.
    pub fn start(
        dir: &Path,
        n: usize,
        pg_url: &str,
        local: &chain::LocalChain,
        chain_id: u64,
        upstream_url: &str,
    ) -> Result<Nodes> {
        let exe = std::env::current_exe()
            .map_err(|e| CliError::Service(format!("this program's path: {e}")))?;
        let provider = keys::generate_ed25519();
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let ndir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&ndir).map_err(|e| CliError::io(&ndir, e))?;
            keys::write_ed25519(&ndir.join("provider.key"), &provider)?;
            let addr = free_addr()?;
            let mut file = gateway::GatewayFile::new(
                &addr.to_string(),
                upstream_url,
                &local.rpc,
                local.chain_terms(chain_id),
                upstream::prices(),
            );
            file.store = Some(StoreConfig {
                kind: StoreKind::Postgres,
                url: Some(pg_url.into()),
                shards: SHARDS,
                lease_ms: LEASE_MS,
                node_url: Some(format!("http://{addr}")),
                ..StoreConfig::default()
            });
            let config = ndir.join("gateway.toml");
            file.write(&config)?;
            let log = ndir.join("serve.log");
            let stderr = std::fs::File::create(&log).map_err(|e| CliError::io(&log, e))?;
            let child = Command::new(&exe)
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|e| CliError::Service(format!("starting node {i}: {e}")))?;
            nodes.push(Node {
                addr,
                log,
                child: Some(child),
            });
        }
        Ok(Nodes(nodes))
    }

    /// Waits until every node answers `/healthz`.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .map_err(|e| CliError::Service(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut self.0 {
            loop {
                if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    return Err(CliError::Service(format!(
                        "a node exited at start ({status}): {log}"
                    )));
                }
                let url = format!("http://{}/healthz", node.addr);
                if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(CliError::Service(format!(
                        "node {} did not start",
                        node.addr
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Where the nodes listen.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|n| n.addr).collect()
    }

    /// Their base URLs.
    pub fn urls(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| format!("http://{}", n.addr))
            .collect()
    }

    /// SIGKILLs the node `holder` names (by the URL it registered); returns that URL.
    pub fn kill_owner(&mut self, holder: &Holder) -> Result<String> {
        let url = holder.url.clone().unwrap_or_default();
        let node = self
            .0
            .iter_mut()
            .find(|n| format!("http://{}", n.addr) == url)
            .ok_or_else(|| CliError::Verification(format!("no demo node is at {url:?}")))?;
        if let Some(mut child) = node.child.take() {
            child
                .kill()
                .map_err(|e| CliError::Service(format!("killing {url}: {e}")))?;
            let _ = child.wait();
        }
        Ok(url)
    }

    /// Stops every node still running: SIGINT (a clean stop releases its leases), then
    /// SIGKILL after five seconds.
    pub fn stop(&mut self) {
        for node in &mut self.0 {
            if let Some(child) = node.child.as_ref() {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in &mut self.0 {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
