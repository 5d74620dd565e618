//! The provider console at `/tally/console` (spec/HTTP.md §11): a server-rendered page for the
//! operator with the channels, their money, calls and revenue over time, refusals, claims and
//! credits, and the same data as JSON at `/tally/console/data.json`.
//!
//! It is the operator's, never public: without `admin_token_file` it does not exist (404);
//! with it, every request needs the admin token as a bearer or a session cookie from the
//! login form ([`auth`]). Every response is `no-store`, unframeable, referrer-free and under
//! a CSP that allows nothing but its own nonce'd `<style>` and form posts to itself; the
//! token is never echoed, logged or put in a cookie.
//!
//! - [`auth`]: bearer or cookie, the session MAC, the login limiter.
//! - [`data`]: what is shown, read from the gateway's own sources.
//! - [`page`]: the HTML, a pure function of [`data::ConsoleData`].
//! - [`settlement`]: the settlement worker's ticks, as the console sees them.

pub mod auth;
pub mod data;
pub mod page;
pub mod settlement;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tally_http::Reason;

pub use settlement::SettlementView;

use crate::errors::GatewayError;
use crate::gateway::Gateway;
use crate::readauth::AdminToken;

/// The console's path.
pub const PATH: &str = "/tally/console";

/// What a wrong or missing login answers: the same words whatever was wrong.
const LOGIN_FAILED: &str = "That token was not accepted.";

/// The console's routes (merged into the gateway's endpoints, so both the metering layer's
/// app and the reverse proxy serve them, and the proxy never forwards these paths).
pub fn router() -> Router<Gateway> {
    Router::new()
        .route(PATH, get(console))
        .route("/tally/console/data.json", get(data_json))
        .route("/tally/console/login", post(login))
        .route("/tally/console/logout", post(logout))
        // Every other path under the console is the gateway's too: forwarded, it would hand
        // the session cookie (scoped to this prefix) or an admin bearer to the upstream.
        .route("/tally/console/", any(unknown))
        .route("/tally/console/{*rest}", any(unknown))
        .method_not_allowed_fallback(not_allowed)
}

/// Any other path under `/tally/console/`: 404, hardened.
async fn unknown() -> Response {
    let e = GatewayError::new(Reason::NotFound, "no such endpoint");
    harden(e.into_response(), &nonce())
}

/// A console path with the wrong method: 405, hardened like every console answer.
async fn not_allowed() -> Response {
    harden(StatusCode::METHOD_NOT_ALLOWED.into_response(), &nonce())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The admin token, or 404: a gateway without one has no console.
fn enabled(gw: &Gateway) -> Result<&AdminToken, GatewayError> {
    gw.settings()
        .admin_token
        .as_ref()
        .ok_or_else(|| GatewayError::new(Reason::NotFound, "no such endpoint"))
}

/// Adds the headers every console response carries (spec/HTTP.md §11.2).
fn harden(mut resp: Response, nonce: &str) -> Response {
    let csp = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

fn html(status: StatusCode, body: String, nonce: &str) -> Response {
    let resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    harden(resp, nonce)
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    let n = nonce();
    html(status, page::login_page(message, &n), &n)
}

/// `GET /tally/console`: the page for the operator, the login page (401) for anyone else.
async fn console(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let token = match enabled(&gw) {
        Ok(t) => t,
        Err(e) => return harden(e.into_response(), &nonce()),
    };
    if !auth::authorized(token, &headers, now_ms()) {
        return login_page(StatusCode::UNAUTHORIZED, None);
    }
    match data::gather(&gw, now_ms()).await {
        Ok(d) => {
            let n = nonce();
            html(StatusCode::OK, page::console_page(&d, &n), &n)
        }
        Err(e) => harden(e.into_response(), &nonce()),
    }
}

/// `GET /tally/console/data.json`: the page's data, same authorization, `unauthorized` (401)
/// JSON otherwise.
async fn data_json(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let resp = match enabled(&gw) {
        Err(e) => e.into_response(),
        Ok(token) if !auth::authorized(token, &headers, now_ms()) => GatewayError::new(
            Reason::Unauthorized,
            "the console needs the admin token or a console session",
        )
        .into_response(),
        Ok(_) => match data::gather(&gw, now_ms()).await {
            Ok(d) => Json(d).into_response(),
            Err(e) => e.into_response(),
        },
    };
    harden(resp, &nonce())
}

/// Reads a login body: form-urlencoded only, at most [`auth::MAX_LOGIN_BODY`] bytes.
async fn login_body(headers: &HeaderMap, body: Body) -> Result<Bytes, StatusCode> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > auth::MAX_LOGIN_BODY as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let limited = http_body_util::Limited::new(body, auth::MAX_LOGIN_BODY);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// `POST /tally/console/login`: the right token gets a session cookie and a 303 to the
/// console; anything else the login page again (401), with one generic message.
async fn login(State(gw): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let token = match enabled(&gw) {
        Ok(t) => t,
        Err(e) => return harden(e.into_response(), &nonce()),
    };
    let body = match login_body(&headers, body).await {
        Ok(b) => b,
        Err(status) => return login_page(status, Some(LOGIN_FAILED)),
    };
    let now = now_ms();
    // The token is checked first: it is long and compared by digest, so checking it is cheap
    // and guessing it hopeless, and a stranger spending the failure budget must not lock the
    // operator out. The cap only slows wrong guesses.
    let ok = auth::form_token(&body).is_some_and(|t| token.matches(&t));
    if !ok {
        let limiter = &gw.inner.console_logins;
        if !limiter.allowed(now) {
            return login_page(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed sign-ins; try again in a minute."),
            );
        }
        limiter.failed();
        return login_page(StatusCode::UNAUTHORIZED, Some(LOGIN_FAILED));
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let expiry = now.saturating_add(auth::SESSION_TTL.as_millis() as u64);
    let cookie = auth::set_cookie(&auth::session_value(token, expiry), secure);
    redirect(&cookie)
}

/// A 303 to the console that sets `cookie`.
fn redirect(cookie: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(PATH));
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    harden(resp, &nonce())
}

/// `POST /tally/console/logout`: clears the cookie and goes back to the (login) page.
async fn logout(State(gw): State<Gateway>) -> Response {
    if let Err(e) = enabled(&gw) {
        return harden(e.into_response(), &nonce());
    }
    redirect(&auth::clear_cookie())
}
