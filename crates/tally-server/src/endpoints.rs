//! The gateway's own endpoints (spec/HTTP.md §4–§7): terms discovery, channel state,
//! records, proofs, checkpoints, session binding, disputes, cooperative close, restore,
//! `/metrics`, `/healthz` and the provider console (`/tally/console`, [`crate::console`]).
//! Every failure answers with a reason (spec/HTTP.md §8).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, Method};
use tally_core::encoding::Canonical;
use tally_core::{ChannelId, Record};
use tally_http::api::{
    Checkpoints, CloseRequest, CloseSigned, ConsistencyProof, InclusionProof, ReceiptFound,
    RecordsPage, SessionBound, MAX_RECORDS_PER_PAGE,
};
use tally_http::headers::{API_PREFIX, WELL_KNOWN_PATH};
use tally_http::{Reason, SessionBinding, WireCheckpoint};

use crate::errors::GatewayError;
use crate::gateway::{Gateway, RequestView};
use crate::readauth::ReadAuthorized;

/// The largest JSON body an endpoint reads (a proof bundle is at most 64 KiB).
pub const MAX_ENDPOINT_BODY: usize = 128 * 1024;

/// An endpoint's JSON body, read only up to [`MAX_ENDPOINT_BODY`]: a declared length over it
/// is refused unread and a longer stream is cut there, so a stranger's POST costs at most
/// that much memory (axum's own default would read 2 MiB first), and a refusal is a JSON
/// reason like every other (spec/HTTP.md §8).
pub struct EndpointBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for EndpointBody {
    type Rejection = GatewayError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, GatewayError> {
        let too_large = || {
            GatewayError::new(
                Reason::PayloadTooLarge {
                    limit: MAX_ENDPOINT_BODY as u64,
                },
                format!("the body exceeds {MAX_ENDPOINT_BODY} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_ENDPOINT_BODY as u64) {
            return Err(too_large());
        }
        let limited = http_body_util::Limited::new(req.into_body(), MAX_ENDPOINT_BODY);
        match http_body_util::BodyExt::collect(limited).await {
            Ok(c) => Ok(EndpointBody(c.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(_) => Err(GatewayError::malformed("could not read the body")),
        }
    }
}

/// The router of every gateway endpoint.
pub fn router(gateway: Gateway) -> Router {
    let api = Router::new()
        .route("/channels/{id}", get(channel_state))
        .route("/channels/{id}/session", post(bind_session))
        .route("/channels/{id}/records", get(records))
        .route("/channels/{id}/receipts", get(receipt))
        .route("/channels/{id}/proofs/inclusion", get(inclusion))
        .route("/channels/{id}/proofs/consistency", get(consistency))
        .route(
            "/channels/{id}/checkpoints",
            get(checkpoints).post(post_checkpoint),
        )
        .route("/channels/{id}/disputes", post(dispute))
        .route("/channels/{id}/close", post(close))
        .route("/channels/{id}/restore", post(restore))
        .route("/relay/open", post(relay_open))
        .route("/relay/topup", post(relay_top_up))
        .fallback(not_found);
    Router::new()
        .route(WELL_KNOWN_PATH, get(terms))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest(API_PREFIX, api)
        .merge(crate::console::router())
        .with_state(gateway)
}

async fn not_found() -> GatewayError {
    GatewayError::new(Reason::NotFound, "no such endpoint")
}

/// `POST /tally/v1/relay/open` (spec/HTTP.md §12): `not_found` unless `[relay]` is set.
async fn relay_open(State(gw): State<Gateway>, body: EndpointBody) -> Response {
    let done = match gw.relay() {
        Some(relay) => relay.open(&body.0).await,
        None => Err(not_found().await),
    };
    relayed(&gw, done)
}

/// `POST /tally/v1/relay/topup` (spec/HTTP.md §12).
async fn relay_top_up(State(gw): State<Gateway>, body: EndpointBody) -> Response {
    let done = match gw.relay() {
        Some(relay) => relay.top_up(&body.0).await,
        None => Err(not_found().await),
    };
    relayed(&gw, done)
}

/// A relay's answer; after a relayed deposit the cached funding of its channel is dropped,
/// so the channel's first paid call reads the new deposit (spec/HTTP.md §12.2).
fn relayed(gw: &Gateway, done: Result<tally_http::api::Relayed, GatewayError>) -> Response {
    match done {
        Ok(done) => {
            gw.inner.funding.forget(&done.channel_id);
            Json(done).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn terms(State(gw): State<Gateway>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        gw.inner.terms_bytes.clone(),
    )
        .into_response()
}

/// `ok` while the gateway can record; 503 with the reason while its log cannot take writes
/// (and a recovery attempt is started), so a load balancer stops sending paid traffic.
async fn healthz(State(gw): State<Gateway>) -> Response {
    if let Err(e) = gw.ensure_writable() {
        return e.into_response();
    }
    // A cluster node that cannot reach its database can serve nothing: the load balancer
    // should send its traffic elsewhere.
    match gw.inner.store.reachable().await {
        Ok(()) => "ok\n".into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    let log = match gw.log() {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let (channels, records) = match log.totals().await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let (promised, oldest) = gw.inner.promises.outstanding();
    let log_pending = log.pending();
    let gauges = crate::metrics::Gauges {
        channels,
        log_records: records,
        in_memory: gw.inner.channels.len(),
        promised,
        oldest_promise: oldest.unwrap_or_default(),
        log_pending: log_pending.records,
        log_pending_oldest: log_pending.oldest.unwrap_or_default(),
    };
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics().render(&gauges),
    )
        .into_response()
}

fn channel_id(text: &str) -> Result<ChannelId, GatewayError> {
    ChannelId::from_hex(text).map_err(|e| GatewayError::malformed(format!("channel id: {e}")))
}

fn query_u64(query: &Option<String>, name: &str) -> Result<Option<u64>, GatewayError> {
    let Some(q) = query else { return Ok(None) };
    let map: HashMap<&str, &str> = q.split('&').filter_map(|kv| kv.split_once('=')).collect();
    match map.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| GatewayError::malformed(format!("query parameter {name} is not a u64"))),
    }
}

fn required(query: &Option<String>, name: &str) -> Result<u64, GatewayError> {
    query_u64(query, name)?
        .ok_or_else(|| GatewayError::malformed(format!("query parameter {name} is required")))
}

/// Parses an [`EndpointBody`] (already bounded).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::malformed(format!("{what}: {e}")))
}

fn log_error(e: tally_log::LogError) -> GatewayError {
    match e {
        tally_log::LogError::OutOfRange { .. } | tally_log::LogError::BadSizes { .. } => {
            GatewayError::new(Reason::NotFound, e.to_string())
        }
        other => GatewayError::internal(other.to_string()),
    }
}

async fn channel_state(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
) -> Result<Json<tally_http::api::ChannelState>, GatewayError> {
    let id = read.channel;
    Ok(Json(gw.channel_state(&id).await?))
}

async fn bind_session(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    EndpointBody(body): EndpointBody,
) -> Result<Json<SessionBound>, GatewayError> {
    let id = channel_id(&id)?;
    let binding: SessionBinding = parse_json(&body, "session binding")?;
    let request_salt = gw.bind_session(&id, &binding).await?;
    Ok(Json(SessionBound {
        bound: binding.session_key,
        request_salt,
    }))
}

async fn records(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
    RawQuery(q): RawQuery,
) -> Result<Json<RecordsPage>, GatewayError> {
    let id = read.channel;
    let from = query_u64(&q, "from")?.unwrap_or(0);
    let store = gw.log()?;
    let size = store.head(&id).await?.map_or(0, |h| h.size);
    let to = query_u64(&q, "to")?
        .unwrap_or(size)
        .min(from.saturating_add(MAX_RECORDS_PER_PAGE))
        .min(size);
    // A page signs up to MAX_RECORDS_PER_PAGE outcomes (~27 µs each): pages are rendered one
    // at a time, off the async workers, so reads can take at most one core from metering.
    let _permit = gw
        .inner
        .page_renders
        .acquire()
        .await
        .map_err(|_| GatewayError::internal("page renderer closed"))?;
    let bodies = match from < to {
        true => store.records(&id, from..to).await?,
        false => Vec::new(),
    };
    let signer = gw.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Vec<_>, GatewayError> {
        let mut out = Vec::with_capacity(bodies.len());
        {
            for bytes in bodies {
                let record = Record::from_bytes(&bytes)
                    .map_err(|e| GatewayError::internal(format!("stored record: {e}")))?;
                out.push(signer.wire_record(&record));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| GatewayError::internal(format!("page renderer: {e}")))??;
    Ok(Json(RecordsPage {
        from,
        records: out,
        size,
    }))
}

async fn receipt(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
    RawQuery(q): RawQuery,
) -> Result<Json<ReceiptFound>, GatewayError> {
    let lane = u32::try_from(required(&q, "lane")?)
        .map_err(|_| GatewayError::malformed("lane is out of range"))?;
    let seq = required(&q, "seq")?;
    let (index, header) = gw.receipt_of(&read.channel, lane, seq).await?;
    let payment_response = header
        .to_str()
        .map_err(|_| GatewayError::internal("PAYMENT-RESPONSE is not text"))?
        .to_string();
    Ok(Json(ReceiptFound {
        lane,
        seq,
        index,
        payment_response,
    }))
}

async fn inclusion(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
    RawQuery(q): RawQuery,
) -> Result<Json<InclusionProof>, GatewayError> {
    let id = read.channel;
    let index = required(&q, "index")?;
    let size = required(&q, "size")?;
    let store = gw.log()?;
    let proof = store
        .inclusion_proof(&id, index, size)
        .await?
        .map_err(log_error)?;
    let root = store.root_at(&id, size).await?;
    Ok(Json(InclusionProof {
        index,
        size,
        root,
        proof,
    }))
}

async fn consistency(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
    RawQuery(q): RawQuery,
) -> Result<Json<ConsistencyProof>, GatewayError> {
    let id = read.channel;
    let old = required(&q, "old")?;
    let new = required(&q, "new")?;
    let store = gw.log()?;
    let proof = store
        .consistency_proof(&id, old, new)
        .await?
        .map_err(log_error)?;
    Ok(Json(ConsistencyProof {
        old,
        new,
        old_root: store.root_at(&id, old).await?,
        new_root: store.root_at(&id, new).await?,
        proof,
    }))
}

async fn checkpoints(
    State(gw): State<Gateway>,
    read: ReadAuthorized,
) -> Result<Json<Checkpoints>, GatewayError> {
    let id = read.channel;
    let mut out = Vec::new();
    for (_, bytes) in gw.log()?.checkpoints(&id).await? {
        let cp: WireCheckpoint = serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}")))?;
        out.push(cp);
    }
    Ok(Json(Checkpoints { checkpoints: out }))
}

async fn post_checkpoint(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    EndpointBody(body): EndpointBody,
) -> Result<Json<WireCheckpoint>, GatewayError> {
    let id = channel_id(&id)?;
    let wire: WireCheckpoint = parse_json(&body, "checkpoint")?;
    Ok(Json(gw.accept_checkpoint(&id, &wire).await?))
}

async fn close(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    EndpointBody(body): EndpointBody,
) -> Result<Json<CloseSigned>, GatewayError> {
    let id = channel_id(&id)?;
    let req: CloseRequest = parse_json(&body, "close request")?;
    Ok(Json(gw.close(&id, &req).await?))
}

async fn restore(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    EndpointBody(body): EndpointBody,
) -> Result<Json<tally_http::api::Restored>, GatewayError> {
    let id = channel_id(&id)?;
    let upload: tally_http::api::RestoreUpload = parse_json(&body, "restore upload")?;
    Ok(Json(gw.restore(&id, &upload).await?))
}

async fn dispute(
    State(gw): State<Gateway>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: HeaderMap,
    EndpointBody(body): EndpointBody,
) -> Result<Response, GatewayError> {
    let view = RequestView {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &headers,
    };
    crate::dispute::dispute(&gw, &view, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    async fn extract(declared: Option<usize>, actual: usize) -> Result<usize, String> {
        let mut req = http::Request::builder().method("POST").uri("/x");
        if let Some(n) = declared {
            req = req.header(http::header::CONTENT_LENGTH, n);
        }
        let req = req
            .body(axum::body::Body::from(vec![b'x'; actual]))
            .map_err(|e| e.to_string())?;
        EndpointBody::from_request(req, &())
            .await
            .map(|b| b.0.len())
            .map_err(|e| e.reason.code().to_string())
    }

    #[tokio::test]
    async fn endpoint_bodies_are_bounded_before_they_are_read() {
        assert_eq!(extract(Some(10), 10).await, Ok(10));
        assert_eq!(
            extract(None, MAX_ENDPOINT_BODY).await,
            Ok(MAX_ENDPOINT_BODY)
        );
        // Declared over the limit: refused without reading (the body here is empty).
        assert_eq!(
            extract(Some(MAX_ENDPOINT_BODY + 1), 0).await,
            Err("payload_too_large".into())
        );
        // Undeclared and streamed past the limit: cut at the limit.
        assert_eq!(
            extract(None, MAX_ENDPOINT_BODY + 1).await,
            Err("payload_too_large".into())
        );
    }
}
