//! The demo's small built-in upstream API (what a provider would run behind the gateway):
//! - `GET /v1/items/{id}`: a fixed-price lookup;
//! - `POST /v1/complete`: a metered "completion" that reports the words of its body as
//!   units in `x-tokens`;
//! - `GET /v1/flaky`: fails with 500 (charged by the demo's terms, then refunded on dispute);
//! - `GET /health`: free.

use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

use crate::error::{CliError, Result};

/// The units header the metered route reports.
pub const UNITS_HEADER: &str = "x-tokens";

/// The routes.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/v1/items/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("{{\"item\":\"{id}\",\"status\":\"in stock\"}}")
                },
            ),
        )
        .route(
            "/v1/complete",
            post(|body: String| async move {
                let tokens = body.split_whitespace().count();
                (
                    [(UNITS_HEADER, tokens.to_string())],
                    format!("completed {tokens} tokens"),
                )
            }),
        )
        .route(
            "/v1/flaky",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "upstream failure") }),
        )
        .route("/health", get(|| async { "ok" }))
}

/// The upstream, serving on a loopback port until stopped.
pub struct Upstream {
    /// Its address.
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Upstream {
    /// Starts it on 127.0.0.1 at a free port.
    pub async fn start() -> Result<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| CliError::Service(format!("binding the upstream: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::Service(e.to_string()))?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tally_server::serve(listener, routes(), async {
            let _ = rx.await;
        }));
        Ok(Upstream {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}
