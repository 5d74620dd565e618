//! A JSON-RPC proxy in front of anvil that records every call and can make chosen methods fail
//! in the ways a real network does: the answer lost after the node acted, the request never
//! delivered, or an error answer.

use std::sync::{Arc, Mutex};

use alloy::transports::http::reqwest;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request, then close the connection without answering.
    AnswerLost,
    /// Close the connection without forwarding: the node never sees the request.
    NotDelivered,
    /// Answer with a JSON-RPC error without forwarding.
    Error,
}

#[derive(Default)]
struct State {
    /// (method, fault, how many more times).
    rules: Vec<(String, Fault, usize)>,
    /// (method, params) of every request, in arrival order.
    calls: Vec<(String, Value)>,
    /// eth_getLogs over more blocks than this answers an error, like many hosted nodes.
    max_log_blocks: Option<u64>,
}

pub struct RpcProxy {
    pub url: reqwest::Url,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    pub async fn start(upstream: reqwest::Url) -> RpcProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            while let Ok((sock, _)) = listener.accept().await {
                let (client, upstream, state) = (client.clone(), upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, client, upstream, state).await;
                });
            }
        });
        RpcProxy { url, state, task }
    }

    /// From now on every eth_getLogs over more than `max` blocks answers an error.
    pub fn refuse_log_ranges_over(&self, max: u64) {
        self.state.lock().unwrap().max_log_blocks = Some(max);
    }

    /// The next `times` calls of `method` fail with `fault`.
    pub fn fail(&self, method: &str, fault: Fault, times: usize) {
        self.state
            .lock()
            .unwrap()
            .rules
            .push((method.to_string(), fault, times));
    }

    /// The params of every call of `method` so far.
    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection (answers say `connection: close`).
async fn serve(
    mut sock: TcpStream,
    client: reqwest::Client,
    upstream: reqwest::Url,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let body = read_request(&mut sock).await?;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = request["method"].as_str().unwrap_or_default().to_string();
    let fault = {
        let mut st = state.lock().unwrap();
        st.calls.push((method.clone(), request["params"].clone()));
        let refused = method == "eth_getLogs"
            && st
                .max_log_blocks
                .is_some_and(|max| log_blocks(&request) > max);
        let rule = st
            .rules
            .iter_mut()
            .find(|(m, _, left)| *m == method && *left > 0);
        let ruled = rule.map(|(_, fault, left)| {
            *left -= 1;
            *fault
        });
        if refused {
            Some(Fault::Error)
        } else {
            ruled
        }
    };
    let answer = match fault {
        Some(Fault::NotDelivered) => return Ok(()),
        Some(Fault::Error) => serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": { "code": -32603, "message": "injected fault" },
        }))
        .unwrap(),
        Some(Fault::AnswerLost) | None => {
            let forwarded = client
                .post(upstream)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(std::io::Error::other)?
                .bytes()
                .await
                .map_err(std::io::Error::other)?;
            if fault == Some(Fault::AnswerLost) {
                return Ok(());
            }
            forwarded.to_vec()
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&answer).await?;
    sock.shutdown().await
}

/// Reads one HTTP/1.1 request with a content-length body and returns the body.
async fn read_request(sock: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf[header_end..header_end + len].to_vec())
}

/// How many blocks an eth_getLogs request spans (hex fromBlock/toBlock; 0 if unreadable).
fn log_blocks(request: &Value) -> u64 {
    let num = |k: &str| {
        request["params"][0][k]
            .as_str()
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    match (num("fromBlock"), num("toBlock")) {
        (Some(from), Some(to)) => to.saturating_sub(from) + 1,
        _ => 0,
    }
}
