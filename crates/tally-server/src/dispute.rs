//! Disputes (spec/HTTP.md §7): the client proves a record with a bundle, states the request
//! and response behind its hashes, and pays for the dispute request with a `max_amount = 0`
//! authorization. If a refund rule applies, the answer is a credit record (negative amount,
//! spec/PROTOCOL.md §5.3), co-signed like any other; otherwise a `dispute_refused` reason.

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
use tally_http::headers::PAYMENT_RESPONSE;
use tally_http::{Price, Reason};

use crate::errors::GatewayError;
use crate::gateway::{Admitted, Gateway, RequestView};

fn refused(why: impl Into<String>) -> GatewayError {
    let why = why.into();
    GatewayError::new(Reason::DisputeRefused { why: why.clone() }, why)
}

/// Handles `POST /tally/v1/channels/{id}/disputes`.
pub async fn dispute(gateway: &Gateway, view: &RequestView<'_>) -> Result<Response, GatewayError> {
    let request: DisputeRequest = serde_json::from_slice(view.body)
        .map_err(|e| GatewayError::malformed(format!("dispute body: {e}")))?;
    let admission = match gateway
        .admit(
            view,
            &Price::Fixed {
                amount: Default::default(),
            },
        )
        .await?
    {
        Admitted::Fresh(a) => a,
        Admitted::Replay(cached) => return Ok(cached.into_response()),
    };
    if admission.authorization().max_amount != 0 {
        return Err(GatewayError::malformed(
            "a dispute is authorized with max_amount 0 (spec/PROTOCOL.md §5.3)",
        ));
    }
    let channel = admission.channel();
    let credit_seq = admission.seq();
    let session = admission
        .state()
        .and_then(|s| s.session_key)
        .ok_or_else(|| GatewayError::internal("admitted without a session key"))?;
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
    let index = disputed.outcome.seq;
    let stored = gateway
        .store()
        .record(&channel, index)
        .map_err(|_| refused(format!("record {index} is not in this log")))?;
    if stored != disputed.to_bytes() {
        return Err(refused(format!("record {index} differs from the log's")));
    }
    if let Some(seq) = gateway
        .bindings()
        .credit_for(&channel, index)
        .map_err(|e| GatewayError::internal(format!("reading credits: {e}")))?
    {
        // The mark is written before the credit is appended; it counts only if the credit
        // record made it into the log.
        let credited = gateway
            .store()
            .record(&channel, seq)
            .ok()
            .and_then(|b| Record::from_bytes(&b).ok())
            .is_some_and(|r| r.outcome.amount < 0);
        if credited {
            return Err(refused(format!(
                "record {index} was already credited by record {seq}"
            )));
        }
    }
    let x = &request.exchange;
    let salt = gateway.request_salt(&channel)?;
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
    let terms = gateway.terms();
    let charged = amount.unsigned_abs();
    let route_max = terms
        .price_for(&x.method, &x.path)
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
    if apply_amount(admission.authorization().prev_cumulative, credit).is_none() {
        return Err(refused("the credit exceeds the cumulative amount"));
    }
    {
        let gw = gateway.clone();
        tokio::task::spawn_blocking(move || {
            gw.bindings().mark_credited(&channel, index, credit_seq)
        })
        .await
        .map_err(|e| GatewayError::internal(format!("credit writer: {e}")))?
        .map_err(|e| GatewayError::internal(format!("storing credit mark: {e}")))?;
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
            200,
            Some(content_type.clone()),
            body.clone(),
            0,
            credit,
        )
        .await?;
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type);
    resp.headers_mut()
        .insert(PAYMENT_RESPONSE, recorded.payment_response);
    Ok(resp)
}
