//! tally-server: the metering gateway (DESIGN.md §3–§4, spec/HTTP.md).
//!
//! Two ways to use it: wrap axum routes in [`MeteringLayer`] (see [`app`]), or run the
//! reverse proxy [`proxy_app`] in front of any HTTP API, configured from TOML
//! ([`config::GatewayConfig`], binary `tally-gateway`). Either way every priced request is
//! admitted only with a valid client authorization at the channel's next seq, forwarded,
//! metered, appended durably to the channel's Merkle log and answered with a signed receipt.
//! With a payee key (`[settlement]`), the standalone gateway also claims through tally-chain's
//! settlement worker and cosigns cooperative closes ([`Gateway::close`]).
//!
//! What it must never do: return a receipt before its record is durable (P8); charge a
//! request the upstream did not serve or more than the client authorized (P5); accept a
//! seq out of order or charge a retry twice (P6); serve beyond the funded deposit or the
//! credit limit past the last client-signed checkpoint; write key material to a log; cosign a
//! close at any state but its log's durable final one, or for a channel that pays another
//! payee or token; record anything on a channel it agreed to close.

pub mod bindings;
pub mod channel;
pub mod config;
pub mod dispute;
pub mod endpoints;
pub mod errors;
pub mod funding;
pub mod gateway;
pub mod layer;
pub mod metrics;
pub mod pricing;
pub mod proxy;
pub mod redact;
pub mod standalone;

use axum::Router;

pub use errors::{GatewayError, StartError};
pub use gateway::{Gateway, Settings};
pub use layer::MeteringLayer;
pub use proxy::Proxy;

/// An axum app: the gateway's endpoints plus `routes`, metered by [`MeteringLayer`].
pub fn app(gateway: &Gateway, routes: Router) -> Router {
    endpoints::router(gateway.clone()).merge(routes.layer(MeteringLayer::new(gateway.clone())))
}

/// The reverse proxy app: the gateway's endpoints, and everything else forwarded to
/// `proxy`'s upstream through the metering layer.
pub fn proxy_app(gateway: &Gateway, proxy: Proxy) -> Router {
    let forward = Router::new()
        .fallback_service(proxy)
        .layer(MeteringLayer::new(gateway.clone()));
    endpoints::router(gateway.clone()).merge(forward)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
