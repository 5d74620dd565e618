//! A round-robin TCP load balancer on 127.0.0.1 for the cluster demo: each accepted
//! connection goes to the next node that accepts a connect, so requests reach every node
//! (and most reach one that does not own the channel, which forwards them), and a dead node
//! is skipped the way a real load balancer's health check would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::error::{CliError, Result};

/// The balancer, running until dropped.
pub struct Balancer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Starts balancing over `nodes`.
    pub async fn start(nodes: Vec<SocketAddr>) -> Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::Service(format!("load balancer: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::Service(format!("load balancer: {e}")))?;
        let next = Arc::new(AtomicUsize::new(0));
        let nodes = Arc::new(nodes);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (nodes, next) = (nodes.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for k in 0..nodes.len() {
                        let node = nodes[(first + k) % nodes.len()];
                        if let Ok(upstream) = TcpStream::connect(node).await {
                            splice(client, upstream).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Balancer { addr, task })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn splice(mut a: TcpStream, mut b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let _done = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}
