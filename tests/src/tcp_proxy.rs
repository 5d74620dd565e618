//! A small TCP proxy for the cluster fault tests (issue 15): in front of several gateway nodes
//! it is the load balancer (each connection goes to the first target that accepts, starting
//! round-robin, so a dead node is passed over); in front of PostgreSQL it is the wire a test
//! cuts ([`TcpProxy::cut`]) to partition one node from the database. Loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one target may take to accept before the next is tried (a target whose
/// process is stopped still accepts in the kernel; one that is gone refuses at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The proxy; dropping it stops accepting and closes every connection it carries.
pub struct TcpProxy {
    addr: SocketAddr,
    /// `true` while cut: open connections close, new ones are closed on accept.
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to the first of
    /// `targets` that accepts, starting one further along for each new connection.
    pub async fn start(targets: Vec<SocketAddr>) -> TcpProxy {
        assert!(!targets.is_empty(), "a proxy needs a target");
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("proxy bind: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("proxy addr: {e}"),
        };
        let (cut, cut_rx) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::new(targets), cut_rx));
        TcpProxy { addr, cut, accept }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` plus [`Self::addr`], for a proxy in front of HTTP servers.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open connection at once, and every new one as soon as it is accepted,
    /// until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets new connections through again (the ones closed by the cut stay closed).
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Every connection task ends on a cut.
        self.cut.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    targets: Arc<Vec<SocketAddr>>,
    cut: watch::Receiver<bool>,
) {
    let next = AtomicUsize::new(0);
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly rather than stop serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *cut.borrow() {
            drop(client);
            continue;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(carry(client, targets.clone(), start, cut.clone()));
    }
}

/// Connects to the first target that accepts, from `start` round the list, and copies both
/// ways until either side closes or the proxy is cut. A connection no target accepts is
/// closed.
async fn carry(
    mut client: TcpStream,
    targets: Arc<Vec<SocketAddr>>,
    start: usize,
    mut cut: watch::Receiver<bool>,
) {
    let mut upstream = None;
    for i in 0..targets.len() {
        let target = targets[(start + i) % targets.len()];
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            upstream = Some(s);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
    // Both streams drop here: the cut closes the connection on both sides.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; returns its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A server that writes `tag` to each connection, then echoes.
    async fn tagged(tag: u8) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(&[tag]).await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// A loopback address nothing listens on.
    async fn dead() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    /// Whether the peer closed `s` (EOF or reset) within 2 s.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    #[tokio::test]
    async fn bytes_go_through_both_ways() {
        let proxy = TcpProxy::start(vec![echo().await]).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await, b"hello");
        assert_eq!(round_trip(&mut s, b"again").await, b"again");
    }

    #[tokio::test]
    async fn a_cut_closes_open_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(vec![echo().await]).await;
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open, b"before").await, b"before");
        proxy.cut();
        assert!(
            closed(&mut open).await,
            "the open connection survived the cut"
        );
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = during.write_all(b"x").await;
        assert!(
            closed(&mut during).await,
            "a connection got through the cut"
        );
        proxy.restore();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"after").await, b"after");
    }

    #[tokio::test]
    async fn a_dead_first_target_falls_over_to_the_next() {
        let proxy = TcpProxy::start(vec![dead().await, tagged(2).await]).await;
        for _ in 0..4 {
            // Whatever the round-robin start, every connection lands on the live target.
            let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
            let mut tag = [0u8; 1];
            s.read_exact(&mut tag).await.unwrap();
            assert_eq!(tag[0], 2);
            assert_eq!(round_trip(&mut s, b"ok").await, b"ok");
        }
    }

    #[tokio::test]
    async fn connections_are_spread_round_robin() {
        let proxy = TcpProxy::start(vec![tagged(1).await, tagged(2).await]).await;
        let mut tags = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
            let mut tag = [0u8; 1];
            s.read_exact(&mut tag).await.unwrap();
            tags.push(tag[0]);
        }
        tags.sort_unstable();
        assert_eq!(tags, [1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn no_live_target_closes_the_connection() {
        let proxy = TcpProxy::start(vec![dead().await]).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut s).await);
    }
}
