//! The pure steps a paid request goes through in the gateway's layer (tally-server
//! `layer.rs`, spec/HTTP.md §4.3 and §9), on arbitrary method, path, header and body: the
//! path is canonicalized (never panics; the result is absolute, canonical again unchanged, and
//! prices the same as itself), priced against a fixed price list (HEAD like GET), the
//! `PAYMENT-SIGNATURE` value decoded down to the authorization, its minimum checked, and the
//! request hashed with the body. The whole layer, with its I/O, is attacked end to end by
//! tests/tests/adversarial.rs; this target covers the parsing those steps do on input a
//! stranger controls.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_core::request::{request_hash, RequestSalt};
use tally_http::headers::decode_header;
use tally_http::path::canonical_path;
use tally_http::terms::PathMatch;
use tally_http::{Amount, MeteredPrice, PaymentPayload, Price, RoutePrice};

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

fn routes() -> Vec<RoutePrice> {
    let route = |method: &str, path: &str, path_match, price| RoutePrice {
        method: method.into(),
        path: path.into(),
        path_match,
        mime_type: None,
        price,
    };
    vec![
        route(
            "GET",
            "/v1/items",
            PathMatch::Prefix,
            Price::Fixed { amount: Amount(7) },
        ),
        route(
            "*",
            "/v1/complete",
            PathMatch::Exact,
            Price::Metered(MeteredPrice {
                min_charge: Amount(5),
                ..MeteredPrice::header("x-tokens", 2, 4000)
            }),
        ),
        route(
            "POST",
            "/v1/a%2Fb",
            PathMatch::Exact,
            Price::Fixed { amount: Amount(1) },
        ),
    ]
}

fn price_for<'a>(routes: &'a [RoutePrice], method: &str, path: &str) -> Option<&'a Price> {
    routes
        .iter()
        .find(|r| {
            r.matches(method, path)
                || (method == "HEAD" && r.method == "GET" && r.matches("GET", path))
        })
        .map(|r| &r.price)
}

fuzz_target!(|data: &[u8]| {
    // Layout: method selector, then path, header and body separated by 0xff bytes.
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(m) % METHODS.len()];
    let mut parts = rest.splitn(3, |b| *b == 0xff);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let routes = routes();
    if let Ok(canonical) = canonical_path(&path) {
        assert!(canonical.starts_with('/'), "{canonical}");
        assert_eq!(
            canonical_path(&canonical).as_deref(),
            Ok(canonical.as_str())
        );
        assert!(!canonical.contains("//"), "{canonical}");
        let price = price_for(&routes, method, &canonical);
        if method == "HEAD" {
            assert_eq!(price, price_for(&routes, "GET", &canonical));
        }
        if let Some(price) = price {
            let min = price.min_authorization().unwrap_or(0);
            assert!(min >= 1, "a priced route accepted a zero maximum");
            assert!(price.charge_for(&[u64::MAX; tally_core::METERS], min) <= min);
        }
    }
    if let Ok(payload) = decode_header::<PaymentPayload>("PAYMENT-SIGNATURE", header) {
        if let Ok((auth, bytes)) = payload.authorization_and_bytes() {
            assert_eq!(payload.x402_version, 2);
            assert!(!bytes.is_empty());
            let _ =
                auth.request_hash == request_hash(&RequestSalt([7; 32]), method, &path, "", body);
        }
    }
});
