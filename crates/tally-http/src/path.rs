//! The canonical form of a request path (spec/HTTP.md §4.3), which the gateway prices and
//! forwards. Upstreams commonly treat `//v1/items/1`, `/v1/./items/1`, `/v1/x/../items/1` and
//! `/v1/%69tems/1` as `/v1/items/1`; if pricing saw the raw text, each spelling would be a
//! different (unpriced, free) route to the same resource. So every path is first brought to
//! one spelling:
//!
//! 1. percent-encoded unreserved characters (RFC 3986 §2.3: `A–Z a–z 0–9 - . _ ~`) are
//!    decoded, every other percent-encoding gets upper-case hex digits (RFC 3986 §6.2.2.1–2);
//! 2. runs of `/` become one `/`;
//! 3. dot segments are removed (RFC 3986 §5.2.4).
//!
//! A path that does not start with `/`, has a broken percent-encoding or holds a byte that
//! is not allowed in a path is refused rather than guessed at.

use thiserror::Error;

/// Why a path has no canonical form.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PathError {
    /// Origin-form paths start with `/` (RFC 9112 §3.2.1).
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("broken percent-encoding at byte {0}")]
    BadPercent(usize),
    /// A byte RFC 3986 does not allow in a path.
    #[error("byte 0x{0:02x} is not allowed in a path")]
    BadByte(u8),
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `pchar` minus percent-encodings, plus `/` (RFC 3986 §3.3).
fn allowed_raw(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Step 1: normalizes percent-encodings. The output is ASCII.
fn normalize_percent(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadPercent(i));
            };
            let decoded = hi << 4 | lo;
            if unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                out.push_str(&format!("%{decoded:02X}"));
            }
            i += 3;
        } else if allowed_raw(b) {
            out.push(char::from(b));
            i += 1;
        } else {
            return Err(PathError::BadByte(b));
        }
    }
    Ok(out)
}

/// Steps 2 and 3 on a normalized path: one `/` between segments, `.` and `..` resolved
/// (RFC 3986 §5.2.4; `..` above the root stays at the root). A trailing `/`, or a final `.`
/// or `..` segment, leaves the path ending in `/`, as the RFC's algorithm does.
fn resolve_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut ends_with_slash = false;
    for segment in path.split('/').skip(1) {
        ends_with_slash = false;
        match segment {
            "" | "." => ends_with_slash = true,
            ".." => {
                stack.pop();
                ends_with_slash = true;
            }
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if ends_with_slash || stack.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical form of `raw` (an origin-form path without the query).
///
/// ```
/// use tally_http::path::canonical_path;
/// assert_eq!(canonical_path("//v1/./x/../%69tems/1").unwrap(), "/v1/items/1");
/// assert_eq!(canonical_path("/a%2fb").unwrap(), "/a%2Fb");
/// ```
pub fn canonical_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    Ok(resolve_segments(&normalize_percent(raw)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_resource_meet() {
        for raw in [
            "/v1/items/1",
            "//v1/items/1",
            "/v1//items///1",
            "/v1/./items/1",
            "/v1/x/../items/1",
            "/../v1/items/1",
            "/v1/%69tems/1",
            "/v1/%69%74%65%6D%73/%31",
            "/v1/items/./1",
        ] {
            assert_eq!(canonical_path(raw).unwrap(), "/v1/items/1", "{raw}");
        }
    }

    #[test]
    fn reserved_encodings_are_kept_with_upper_case_hex() {
        assert_eq!(canonical_path("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(canonical_path("/a%2Fb").unwrap(), "/a%2Fb");
        assert_ne!(
            canonical_path("/a%2Fb").unwrap(),
            canonical_path("/a/b").unwrap()
        );
        // An encoded dot is unreserved, so "%2e%2e" is a real dot segment.
        assert_eq!(canonical_path("/a/%2e%2e/b").unwrap(), "/b");
    }

    #[test]
    fn trailing_slashes_and_roots() {
        assert_eq!(canonical_path("/").unwrap(), "/");
        assert_eq!(canonical_path("//").unwrap(), "/");
        assert_eq!(canonical_path("/a/").unwrap(), "/a/");
        assert_eq!(canonical_path("/a/..").unwrap(), "/");
        assert_eq!(canonical_path("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(canonical_path("/..").unwrap(), "/");
    }

    #[test]
    fn broken_input_is_refused() {
        assert_eq!(canonical_path("v1"), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path(""), Err(PathError::NotAbsolute));
        assert_eq!(canonical_path("/a%2"), Err(PathError::BadPercent(2)));
        assert_eq!(canonical_path("/a%zz"), Err(PathError::BadPercent(2)));
        assert_eq!(canonical_path("/a b"), Err(PathError::BadByte(b' ')));
        assert_eq!(canonical_path("/a?b"), Err(PathError::BadByte(b'?')));
    }

    proptest::proptest! {
        /// Canonicalizing twice changes nothing, and the result is always absolute.
        #[test]
        fn idempotent(raw in "/[a-zA-Z0-9%./_~-]{0,40}") {
            if let Ok(once) = canonical_path(&raw) {
                proptest::prop_assert!(once.starts_with('/'));
                proptest::prop_assert_eq!(canonical_path(&once).unwrap(), once);
            }
        }
    }
}
