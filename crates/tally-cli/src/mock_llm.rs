//! A deterministic stand-in for an OpenAI-compatible inference server, for the demo and the
//! tests: `POST /v1/chat/completions` always answers as a server-sent event stream, one
//! token per event with a small delay, then a usage event (`stream_options.include_usage`
//! style) and `data: [DONE]`. Prompt tokens are the whitespace-separated words of the
//! messages; completion tokens are `max_tokens` (default 16, at most 4096) words drawn from
//! a fixed text, so every run streams the same bytes.
//!
//! `?fail_after=K` breaks the stream after K tokens (an upstream that dies mid-answer).

use std::time::Duration;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use serde::Deserialize;
use tally_server::channel_body::{channel_body, FrameSender};

/// Where the mock answers.
pub const PATH: &str = "/v1/chat/completions";
/// The JSON pointers of its usage event: what a route's meters read.
pub const PROMPT_POINTER: &str = "/usage/prompt_tokens";
/// See [`PROMPT_POINTER`].
pub const COMPLETION_POINTER: &str = "/usage/completion_tokens";
/// The most tokens one completion streams.
pub const MAX_TOKENS: u64 = 4096;
const DEFAULT_TOKENS: u64 = 16;
const WORDS: &[&str] = &[
    "every",
    "line",
    "of",
    "this",
    "bill",
    "is",
    "provable",
    "and",
    "co-signed",
    "by",
    "both",
    "parties",
    "so",
    "nobody",
    "has",
    "to",
    "trust",
    "a",
    "meter",
];

/// The request members the mock reads; everything else is ignored, as servers do.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
}

/// The completion route, streaming one token every `delay`.
pub fn routes(delay: Duration) -> Router {
    Router::new().route(
        PATH,
        post(move |q: RawQuery, body: Bytes| async move {
            // Any content type: the body is read as JSON, as lenient servers do.
            match serde_json::from_slice::<ChatRequest>(&body) {
                Ok(req) => completion(req, fail_after(q.0.as_deref()), delay),
                Err(e) => {
                    let mut resp = Response::new(Body::from(format!("bad request: {e}")));
                    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                    resp
                }
            }
        }),
    )
}

fn fail_after(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("fail_after="))
        .and_then(|v| v.parse().ok())
}

/// The prompt's token count.
pub fn prompt_tokens(messages: &[&str]) -> u64 {
    messages
        .iter()
        .map(|m| m.split_whitespace().count() as u64)
        .sum()
}

/// The events of a completion of `n` tokens after a prompt of `prompt` tokens, in order,
/// each a complete event (`data: …\n\n`): what the mock streams, so a test can compare bytes.
pub fn events(prompt: u64, n: u64) -> Vec<String> {
    let mut out: Vec<String> = (0..n)
        .map(|i| {
            let word = WORDS[((prompt + i) % WORDS.len() as u64) as usize];
            let chunk = serde_json::json!({
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": format!("{word} ")}}],
            });
            format!("data: {chunk}\n\n")
        })
        .collect();
    let usage = serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n},
    });
    out.push(format!("data: {usage}\n\n"));
    out.push("data: [DONE]\n\n".to_string());
    out
}

fn completion(req: ChatRequest, fail_after: Option<u64>, delay: Duration) -> Response {
    let contents: Vec<&str> = req.messages.iter().map(|m| m.content.as_str()).collect();
    let prompt = prompt_tokens(&contents);
    let n = req.max_tokens.unwrap_or(DEFAULT_TOKENS).min(MAX_TOKENS);
    let (tx, body) = channel_body::<std::io::Error>(4);
    tokio::spawn(stream(tx, events(prompt, n), fail_after, delay));
    let mut resp = Response::new(Body::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

async fn stream(
    tx: FrameSender<std::io::Error>,
    events: Vec<String>,
    fail_after: Option<u64>,
    delay: Duration,
) {
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail_after == Some(i as u64) {
            let broken = std::io::Error::other("the model server crashed");
            let _ = tx.send(Err(broken)).await;
            return;
        }
        if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
            return; // The reader left.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_is_deterministic_and_reports_its_usage() {
        let a = events(3, 4);
        assert_eq!(a, events(3, 4));
        assert_eq!(a.len(), 6);
        assert!(a[4].contains("\"prompt_tokens\":3") && a[4].contains("\"completion_tokens\":4"));
        assert_eq!(a[5], "data: [DONE]\n\n");
        assert_eq!(prompt_tokens(&["say hello", " to  the bill "]), 5);
        assert_eq!(fail_after(Some("x=1&fail_after=2")), Some(2));
        assert_eq!(fail_after(Some("fail_after=z")), None);
    }
}
