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
//! What it must never do: return a receipt before its record is durable (P8), except as a
//! promise in promise mode, and then never more than `max_pending` promises outstanding, never
//! one older than `max_delay` unkept, and never an append on a channel that may have lost
//! promises before its client restored it ([`durability`], spec/HTTP.md §5.6); charge a
//! request the upstream did not serve or more than the client authorized (P5); accept a
//! seq out of order or charge a retry twice (P6); serve beyond the funded deposit or the
//! credit limit past the last client-signed checkpoint; write key material to a log; cosign a
//! close at any state but its log's durable final one, or for a channel that pays another
//! payee or token; record anything on a channel it agreed to close; answer a channel read
//! to anyone but the channel's session key or the operator's admin token ([`readauth`]);
//! read a paid body, hold per-channel state or read the chain for a stranger before a
//! signature verified (beyond a bounded, rate-limited few); forward a paid request it could
//! not record (a poisoned log); put a secret (key, token, node URL) into a response or a log.

mod backend;
pub mod bindings;
pub mod bucket;
pub mod channel;
pub mod channel_body;
mod cluster;
pub mod config;
pub mod console;
pub mod dispute;
pub mod durability;
pub mod endpoints;
pub mod errors;
pub mod funding;
pub mod gateway;
pub mod inflight;
pub mod layer;
mod listen;
pub mod metrics;
pub mod proxy;
pub mod readauth;
pub mod redact;
pub mod relay;
pub mod salt;
pub mod standalone;

use axum::Router;

pub use errors::{GatewayError, StartError};
pub use gateway::{Gateway, Settings};
pub use inflight::PaidCapLayer;
pub use layer::MeteringLayer;
pub use listen::{serve, serve_with_limits, ServerLimits};
pub use proxy::Proxy;

/// An axum app: the gateway's endpoints plus `routes`, metered by [`MeteringLayer`], with the
/// default [`ServerLimits`].
pub fn app(gateway: &Gateway, routes: Router) -> Router {
    app_with_limits(gateway, routes, &ServerLimits::default())
}

/// As [`app`], with at most `limits.max_inflight_paid` paid requests in flight
/// ([`PaidCapLayer`], outside the metering layer so a refused request costs nothing). The
/// connection limits are [`serve_with_limits`]'s.
pub fn app_with_limits(gateway: &Gateway, routes: Router, limits: &ServerLimits) -> Router {
    let metered = routes
        .layer(MeteringLayer::new(gateway.clone()))
        .layer(PaidCapLayer::new(gateway.clone(), limits.max_inflight_paid));
    endpoints::router(gateway.clone()).merge(metered)
}

/// The reverse proxy app: the gateway's endpoints, and everything else forwarded to
/// `proxy`'s upstream through the metering layer, with the default [`ServerLimits`].
pub fn proxy_app(gateway: &Gateway, proxy: Proxy) -> Router {
    proxy_app_with_limits(gateway, proxy, &ServerLimits::default())
}

/// As [`proxy_app`], with at most `limits.max_inflight_paid` paid requests in flight.
pub fn proxy_app_with_limits(gateway: &Gateway, proxy: Proxy, limits: &ServerLimits) -> Router {
    let forward = Router::new()
        .fallback_service(proxy)
        .layer(MeteringLayer::new(gateway.clone()))
        .layer(PaidCapLayer::new(gateway.clone(), limits.max_inflight_paid));
    endpoints::router(gateway.clone()).merge(forward)
}
