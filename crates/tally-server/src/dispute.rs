//! Disputes (spec/HTTP.md §7): the client proves a record with a bundle, states the request
//! and response behind its hashes, and pays for the dispute request with a `max_amount = 0`
//! authorization. If a refund rule applies, the answer is a credit record (negative amount,
//! spec/PROTOCOL.md §5.3), co-signed like any other; otherwise a `dispute_refused` reason.
//!
//! A record is judged under the terms it was signed under (its `terms_hash`), not today's:
//! lowering a price later must not make every earlier, correctly charged call refundable.
//! A credit is granted only if it stays at or above the amount claimed onchain (read
//! afresh); otherwise it is refused with that reason and nets against later usage instead.
//! It may go below the newest client-signed checkpoint: the answer carries the payee's
//! EIP-712 signature over the state after the credit (`TALLY-CREDIT-STATE`), with which the
//! client posts the credit (`claimCosigned`) if that older, higher checkpoint is ever
//! claimed (spec/CHAIN.md §4.2).

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use tally_core::encoding::Canonical;
use tally_core::record::apply_amount;
use tally_core::request::{request_hash_with_body_hash, response_hash_with_body_hash};
use tally_core::Record;
use tally_http::amount::SignedAmount;
use tally_http::api::{DisputeGranted, DisputeRequest};
use tally_http::headers::{CREDIT_STATE, PAYMENT_RESPONSE};
use tally_http::path::canonical_path;
use tally_http::{Reason, Terms};

use crate::backend::Log;
use crate::bindings::CreditMark;
use crate::channel::read_record;
use crate::errors::GatewayError;
use crate::gateway::{Admitted, Answer, Gateway, Purpose, RequestView};

pub(crate) fn refused(why: impl Into<String>) -> GatewayError {
    let why = why.into();
    GatewayError::new(Reason::DisputeRefused { why: why.clone() }, why)
}

/// Handles `POST /tally/v1/channels/{id}/disputes`.
pub async fn dispute(
    gateway: &Gateway,
    view: &RequestView<'_>,
    body: &[u8],
) -> Result<Response, GatewayError> {
    gateway.ensure_writable()?;
    let request: DisputeRequest = serde_json::from_slice(body)
        .map_err(|e| GatewayError::malformed(format!("dispute body: {e}")))?;
    let admitted = gateway.admit(view, Purpose::Dispute).await?;
    admitted.check_body(view, body)?;
    let admission = match admitted {
        Admitted::Fresh(a) => a,
        Admitted::Replay {
            cached,
            channel,
            index,
            ..
        } => {
            let credit = replayed_credit_state(gateway, &channel, index).await?;
            let mut resp = cached.into_response();
            if let Some(value) = credit {
                resp.headers_mut().insert(CREDIT_STATE, value);
            }
            return Ok(resp);
        }
    };
    let channel = admission.channel();
    let session = admission.session_key();
    let bundle = &request.bundle;
    if bundle.client_key != session || bundle.provider_key != gateway.public_key() {
        return Err(refused("the bundle names other keys than this channel's"));
    }
    let verified = tally_log::bundle::verify_bundle(bundle)
        .map_err(|e| refused(format!("the bundle does not verify: {e}")))?;
    let disputed: Record = verified.record;
    if disputed.outcome.channel_id != channel {
        return Err(refused("the disputed record is from another channel"));
    }
    let index = disputed.outcome.index;
    let log = gateway.log()?;
    if index >= durable_size(&log, &channel).await? {
        return Err(refused(format!("record {index} is not in this log")));
    }
    let stored = log.record(&channel, index).await?;
    if stored != disputed.to_bytes() {
        return Err(refused(format!("record {index} differs from the log's")));
    }
    if let Some(mark) = gateway
        .side()
        .credit_for(&channel, index)
        .await
        .map_err(|e| e.into_gateway("reading credits"))?
    {
        if credit_landed(&log, &channel, &mark).await? {
            return Err(refused(format!(
                "record {index} was already credited by record {}",
                mark.index
            )));
        }
    }
    let x = &request.exchange;
    let salt = gateway.request_salt(&channel).await?;
    if request_hash_with_body_hash(&salt, &x.method, &x.path, &x.query, &x.request_body_hash)
        != disputed.authorization.request_hash
    {
        return Err(refused("the stated request does not hash to the record's"));
    }
    let response_hash = response_hash_with_body_hash(x.status, &x.response_body_hash);
    if response_hash != disputed.outcome.response_hash {
        return Err(refused("the stated response does not hash to the record's"));
    }
    let amount = disputed.outcome.amount;
    if amount <= 0 {
        return Err(refused("the record charged nothing"));
    }
    let terms = signed_terms(gateway, &disputed).await?;
    let charged = amount.unsigned_abs();
    let path = canonical_path(&x.path)
        .map_err(|e| refused(format!("the stated path has no canonical form: {e}")))?;
    let route_max = terms
        .price_for(&x.method, &path)
        .max_per_call()
        .unwrap_or(0);
    let (refund, rule) = if x.status >= 500 && terms.refunds.server_errors {
        (charged, "server_error")
    } else if terms.refunds.over_max && charged > route_max {
        (charged - route_max, "over_max")
    } else {
        return Err(refused("no refund rule applies to this record"));
    };
    let credit = -i128::try_from(refund).map_err(|_| refused("refund out of range"))?;
    let (_, cumulative) = admission.cumulatives();
    let Some(after) = apply_amount(cumulative, credit) else {
        return Err(refused("the credit exceeds the cumulative amount"));
    };
    let claimed = gateway.funding_fresh(&channel).await?.claimed;
    if after < claimed {
        return Err(refused(format!(
            "a credit of {refund} would take the cumulative to {after}, below the {claimed} claimed onchain; dispute again once later usage covers it"
        )));
    }
    let granted = DisputeGranted {
        disputed_index: index,
        amount: SignedAmount(credit),
        rule: rule.into(),
    };
    let body = Bytes::from(
        serde_json::to_vec(&granted)
            .map_err(|e| GatewayError::internal(format!("dispute JSON: {e}")))?,
    );
    let content_type = HeaderValue::from_static("application/json");
    let recorded = gateway
        .record(
            admission,
            Answer {
                status: 200,
                content_type: Some(content_type.clone()),
                body_hash: tally_core::request::body_hash(&body),
                body: body.clone(),
                units: [0; tally_core::METERS],
                amount: credit,
                credits: Some(index),
            },
        )
        .await?;
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type);
    resp.headers_mut()
        .insert(PAYMENT_RESPONSE, recorded.payment_response);
    let outcome = &recorded.receipt.outcome;
    if let Some(value) = gateway
        .credit_state(&channel, outcome.index, outcome.cumulative)
        .await?
    {
        resp.headers_mut().insert(CREDIT_STATE, value);
    }
    Ok(resp)
}

/// The `TALLY-CREDIT-STATE` of a dispute answered again from the held response (a retry of
/// its seq, spec/HTTP.md §9), so a client whose first answer was lost still gets the
/// payee's signature over the state after its credit.
async fn replayed_credit_state(
    gateway: &Gateway,
    channel: &tally_core::ChannelId,
    index: u64,
) -> Result<Option<HeaderValue>, GatewayError> {
    let log = gateway.log()?;
    if index >= durable_size(&log, channel).await? {
        return Ok(None);
    }
    let record = read_record(&log, channel, index).await?;
    if record.outcome.amount >= 0 {
        return Ok(None);
    }
    gateway
        .credit_state(channel, index, record.outcome.cumulative)
        .await
}

/// The durable log's size. Reads below it either succeed or fail loudly: a failed read is
/// never taken for "not there" (a credit mark read as not landed could credit twice).
async fn durable_size(log: &Log, channel: &tally_core::ChannelId) -> Result<u64, GatewayError> {
    Ok(log.head(channel).await?.map_or(0, |h| h.size))
}

/// Whether a credit mark is backed by its credit record: the record at the mark's index is
/// a credit, authorized by the very dispute request the mark names.
async fn credit_landed(
    log: &Log,
    channel: &tally_core::ChannelId,
    mark: &CreditMark,
) -> Result<bool, GatewayError> {
    if mark.index >= durable_size(log, channel).await? {
        return Ok(false);
    }
    let record = read_record(log, channel, mark.index).await?;
    Ok(record.outcome.amount < 0 && record.authorization.request_hash == mark.request_hash)
}

/// The terms document the disputed record's authorization signed.
async fn signed_terms(gateway: &Gateway, record: &Record) -> Result<Terms, GatewayError> {
    let hash = record.authorization.terms_hash;
    let bytes = gateway
        .side()
        .terms(&hash)
        .await
        .map_err(|e| e.into_gateway("reading terms"))?
        .ok_or_else(|| refused(format!("the record's terms {hash} were never served here")))?;
    Terms::parse(&bytes).map_err(|e| GatewayError::internal(format!("stored terms {hash}: {e}")))
}
