//! The demo's small built-in upstream API (what a provider would run behind the gateway):
//! - `GET /v1/items/{id}`: a fixed-price lookup;
//! - `POST /v1/complete`: a metered "completion" that reports the words of its body as
//!   units in `x-tokens`;
//! - `GET /v1/flaky`: fails with 500 (charged by the demo's terms, then refunded on dispute);
//! - `POST /v1/chat/completions`: a streamed completion ([`crate::mock_llm`]), priced per
//!   input and output token from its usage event;
//! - `GET /health`: free.
//!
//! [`prices`] is the price list a gateway in front of it uses, and [`Server`] serves any
//! router on a port until stopped (this upstream, and the end-to-end tests' servers).

use axum::routing::{get, post};
use axum::Router;
use tally_http::terms::PathMatch;
use tally_http::{Amount, Meter, MeteredPrice, Price, RoutePrice, UnitSource};
use tokio::sync::oneshot;

use crate::error::{CliError, Result};

/// The units header the metered route reports.
pub const UNITS_HEADER: &str = "x-tokens";
/// Price of a fixed-price call (`GET /v1/items/{id}`, and the charged `GET /v1/flaky`),
/// token base units.
pub const ITEM_PRICE: u128 = 10;
/// Price per token of the metered route (`POST /v1/complete`).
pub const TOKEN_PRICE: u128 = 2;
/// The most one metered call costs.
pub const COMPLETE_MAX: u128 = 4000;
/// Price per prompt token of the streamed completion.
pub const INPUT_TOKEN_PRICE: u128 = 1;
/// Price per completion token of the streamed completion.
pub const OUTPUT_TOKEN_PRICE: u128 = 3;
/// The most one streamed completion costs.
pub const CHAT_MAX: u128 = 20_000;
/// The delay between two streamed tokens.
pub const TOKEN_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// The price of the streamed completion: input and output tokens, read from the last
/// server-sent event that reports usage (spec/HTTP.md §4.1).
pub fn chat_price() -> Price {
    let meter = |name: &str, unit_price: u128, pointer: &str| Meter {
        name: name.into(),
        unit_price: Amount(unit_price),
        from: UnitSource::Sse(pointer.into()),
    };
    Price::Metered(MeteredPrice {
        meters: vec![
            meter("input", INPUT_TOKEN_PRICE, crate::mock_llm::PROMPT_POINTER),
            meter(
                "output",
                OUTPUT_TOKEN_PRICE,
                crate::mock_llm::COMPLETION_POINTER,
            ),
        ],
        max_amount: Amount(CHAT_MAX),
        min_charge: Amount(0),
    })
}

/// The price list of these routes, for the gateway in front of them (`/health` is free by
/// not being listed).
pub fn prices() -> Vec<RoutePrice> {
    let fixed = Price::Fixed {
        amount: Amount(ITEM_PRICE),
    };
    vec![
        RoutePrice {
            method: "GET".into(),
            path: "/v1/items".into(),
            path_match: PathMatch::Prefix,
            mime_type: None,
            price: fixed.clone(),
        },
        RoutePrice {
            method: "POST".into(),
            path: "/v1/complete".into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: Price::Metered(MeteredPrice::header(
                UNITS_HEADER,
                TOKEN_PRICE,
                COMPLETE_MAX,
            )),
        },
        RoutePrice {
            method: "GET".into(),
            path: "/v1/flaky".into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: fixed,
        },
        RoutePrice {
            method: "POST".into(),
            path: crate::mock_llm::PATH.into(),
            path_match: PathMatch::Exact,
            mime_type: Some("text/event-stream".into()),
            price: chat_price(),
        },
    ]
}

/// The routes.
pub fn routes() -> Router {
    crate::mock_llm::routes(TOKEN_DELAY)
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

/// Starts the built-in upstream on 127.0.0.1 at a free port.
pub async fn start() -> Result<Server> {
    Server::bind("127.0.0.1:0", routes()).await
}

/// A router served on a listener until stopped; one type for every in-process server so
/// each is started and stopped the same way.
pub struct Server {
    /// Its address.
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` for a free loopback port) and serves `app` on it.
    pub async fn bind(addr: &str, app: Router) -> Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::Service(format!("binding {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::Service(e.to_string()))?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tally_server::serve(listener, app, async {
            let _ = rx.await;
        }));
        Ok(Server {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown: waits until every connection has ended.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }
}
