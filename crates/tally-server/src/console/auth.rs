//! Who may see the console (spec/HTTP.md §11.2): the admin token in `Authorization: Bearer`,
//! or a session cookie the login form handed out.
//!
//! A browser cannot attach a bearer token to a navigation, so `POST /tally/console/login`
//! trades the token for a cookie. The cookie is `<expiry_ms>.<mac>`, the MAC a keyed BLAKE3
//! hash over the expiry under a key derived from the admin token's digest
//! ([`AdminToken::session_key`]): it never carries the token, it cannot be forged or
//! extended without the key, it is checked in constant time, and a new admin token voids
//! every outstanding session.

use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::readauth::AdminToken;

/// The session cookie's name.
pub const COOKIE: &str = "tally_console";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The largest login body read (bytes); a longer one is refused unread.
pub const MAX_LOGIN_BODY: usize = 4 * 1024;
/// Failed logins accepted per [`FAILURE_WINDOW`] before further attempts are refused
/// unchecked until the window ends.
pub const MAX_FAILURES: u32 = 20;
/// The window [`MAX_FAILURES`] counts over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Domain prefix of the session MAC's message.
const SESSION_DOMAIN: &[u8] = b"tally\0console-session\0";

fn mac(token: &AdminToken, expiry_ms: u64) -> [u8; 32] {
    let mut msg = Vec::with_capacity(SESSION_DOMAIN.len() + 8);
    msg.extend_from_slice(SESSION_DOMAIN);
    msg.extend_from_slice(&expiry_ms.to_be_bytes());
    *blake3::keyed_hash(&token.session_key(), &msg).as_bytes()
}

/// A fresh session value expiring at `expiry_ms`.
pub fn session_value(token: &AdminToken, expiry_ms: u64) -> String {
    format!("{expiry_ms}.{}", hex::encode(mac(token, expiry_ms)))
}

/// Whether `value` is a session this token issued that is still valid at `now_ms` (and not
/// valid for longer than a session can be, so a leaked key cannot mint eternal cookies
/// without it also showing here).
pub fn session_valid(token: &AdminToken, value: &str, now_ms: u64) -> bool {
    let Some((expiry, tag)) = value.split_once('.') else {
        return false;
    };
    let Ok(expiry_ms) = expiry.parse::<u64>() else {
        return false;
    };
    let mut presented = [0u8; 32];
    if hex::decode_to_slice(tag, &mut presented).is_err() {
        return false;
    }
    let max_ms = now_ms.saturating_add(SESSION_TTL.as_millis() as u64);
    let fresh = expiry_ms > now_ms && expiry_ms <= max_ms;
    let genuine: bool = mac(token, expiry_ms).ct_eq(&presented).into();
    genuine && fresh
}

/// The console cookie's value among the request's `Cookie` headers, if any.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether the request is the operator's: a bearer admin token or a valid session cookie.
pub fn authorized(token: &AdminToken, headers: &HeaderMap, now_ms: u64) -> bool {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        if let Some(p) = v.as_bytes().strip_prefix(b"Bearer ") {
            if token.matches(p) {
                return true;
            }
        }
    }
    cookie(headers).is_some_and(|c| session_valid(token, &c, now_ms))
}

/// The `Set-Cookie` value that starts a session: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it), scoped to the console's path, `Secure`
/// when the request came through a TLS-terminating proxy that says so.
pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Max-Age={}; Path=/tally/console; HttpOnly; SameSite=Strict{secure}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Max-Age=0; Path=/tally/console; HttpOnly; SameSite=Strict")
}

/// The `token` field of an `application/x-www-form-urlencoded` body, decoded.
pub fn form_token(body: &[u8]) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&')
        .filter_map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            Some((it.next()?, it.next()?))
        })
        .find(|(k, _)| *k == b"token")
        .and_then(|(_, v)| percent_decode(v))
}

fn percent_decode(v: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(v.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// Counts failed logins over a fixed window, so guessing costs at most [`MAX_FAILURES`]
/// hash comparisons a minute however fast the guesses come (the bearer header, checked per
/// request, is not affected).
#[derive(Default)]
pub struct LoginLimiter {
    window: Mutex<(u64, u32)>,
}

impl LoginLimiter {
    /// Whether a login attempt may be checked now.
    pub fn allowed(&self, now_ms: u64) -> bool {
        match self.window.lock() {
            Ok(mut w) => {
                if now_ms.saturating_sub(w.0) >= FAILURE_WINDOW.as_millis() as u64 {
                    *w = (now_ms, 0);
                }
                w.1 < MAX_FAILURES
            }
            Err(_) => false,
        }
    }

    /// Counts a failed attempt.
    pub fn failed(&self) {
        if let Ok(mut w) = self.window.lock() {
            w.1 = w.1.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "console-test-token-0123456789abcdefghij";
    const NOW: u64 = 1_796_612_991_000;

    fn token() -> AdminToken {
        AdminToken::new(T).unwrap()
    }

    #[test]
    fn a_session_verifies_until_it_expires() {
        let t = token();
        let v = session_value(&t, NOW + 1_000);
        assert!(session_valid(&t, &v, NOW));
        assert!(!session_valid(&t, &v, NOW + 1_000));
        assert!(!v.contains(T), "the cookie never carries the token");
    }

    #[test]
    fn forged_extended_or_foreign_sessions_fail() {
        let t = token();
        let v = session_value(&t, NOW + 1_000);
        let (_, tag) = v.split_once('.').unwrap();
        assert!(!session_valid(&t, &format!("{}.{tag}", NOW + 2_000), NOW));
        let other = AdminToken::new("another-token-0123456789abcdefghijklmn").unwrap();
        assert!(!session_valid(&other, &v, NOW));
        let far = session_value(&t, NOW + SESSION_TTL.as_millis() as u64 + 1);
        assert!(
            !session_valid(&t, &far, NOW),
            "longer than a session can be"
        );
        for junk in [
            "",
            ".",
            "x.y",
            "1.00",
            &format!("{}.{}", NOW + 5, "0".repeat(64)),
        ] {
            assert!(!session_valid(&t, junk, NOW), "{junk}");
        }
    }

    #[test]
    fn bearer_or_cookie_authorizes() {
        let t = token();
        let mut h = HeaderMap::new();
        assert!(!authorized(&t, &h, NOW));
        h.insert("authorization", format!("Bearer {T}").parse().unwrap());
        assert!(authorized(&t, &h, NOW));
        h.insert("authorization", "Bearer nope".parse().unwrap());
        assert!(!authorized(&t, &h, NOW));
        let cookie = format!("a=b; {COOKIE}={}", session_value(&t, NOW + 10));
        h.insert("cookie", cookie.parse().unwrap());
        assert!(authorized(&t, &h, NOW));
    }

    #[test]
    fn the_form_token_is_decoded() {
        assert_eq!(form_token(b"token=a%2Bb+c").unwrap(), b"a+b c");
        assert_eq!(form_token(b"x=1&token=abc").unwrap(), b"abc");
        assert_eq!(form_token(b"x=1"), None);
        assert_eq!(form_token(b"token=%zz"), None);
        assert_eq!(form_token(b"token=%4"), None);
    }

    #[test]
    fn failed_logins_are_limited_per_window() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.allowed(NOW));
            l.failed();
        }
        assert!(!l.allowed(NOW + 1));
        assert!(l.allowed(NOW + FAILURE_WINDOW.as_millis() as u64));
    }

    #[test]
    fn cookies_are_scoped_and_http_only() {
        let c = set_cookie("v", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(c.contains("Path=/tally/console") && !c.contains("Secure"));
        assert!(set_cookie("v", true).ends_with("; Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
