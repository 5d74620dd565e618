//! Redaction of secrets before anything reaches a log line.
//!
//! A JSON-RPC endpoint such as `rpc_url` commonly carries its API key in the path
//! (`https://host/v2/<key>`), the query (`?apikey=...`) or the userinfo (`user:pass@`), and
//! transport errors quote the URL they failed on. The gateway's log keeps only what locates
//! the endpoint (scheme, host, port) and replaces everything else with "…" (issue 8 item 8:
//! detail goes to the log, with the URL redacted; spec/HTTP.md §10, `rpc_url`).

/// What replaces a redacted part.
pub const MASK: &str = "…";

/// `url` with only its scheme, host and port kept: a userinfo becomes `…@`, and any path,
/// query or fragment beyond a bare `/` becomes `/…`. Text that is not `scheme://authority...`
/// is replaced entirely, since it cannot be told which part of it is secret.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return MASK.to_string();
    };
    if !is_scheme(scheme) {
        return MASK.to_string();
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let mut out = format!("{scheme}://");
    let host = match authority.rfind('@') {
        Some(at) => {
            out.push_str(MASK);
            out.push('@');
            &authority[at + 1..]
        }
        None => authority,
    };
    out.push_str(host);
    match tail {
        "" => {}
        "/" => out.push('/'),
        _ => {
            out.push('/');
            out.push_str(MASK);
        }
    }
    out
}

/// `text` with every URL in it (`scheme://` up to whitespace, a quote or a bracket) passed
/// through [`redact_url`]: for error messages that may quote the endpoint they failed on.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        if start == sep || !is_scheme(&rest[start..sep]) {
            out.push_str(&rest[..sep + 3]);
            rest = &rest[sep + 3..];
            continue;
        }
        let len = rest[sep..]
            .find(|c: char| c.is_whitespace() || "\"'<>()[]{}`,".contains(c))
            .map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..len]));
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

/// RFC 3986 §3.1: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_scheme_host_and_port_only() {
        assert_eq!(
            redact_url("https://eth-mainnet.example.com/v2/SECRETKEY"),
            "https://eth-mainnet.example.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:8545/?apikey=SECRET#frag"),
            "http://127.0.0.1:8545/…"
        );
        assert_eq!(
            redact_url("https://node.example:443?key=SECRET"),
            "https://node.example:443/…"
        );
        assert_eq!(
            redact_url("wss://user:SECRET@node.example:8546/ws"),
            "wss://…@node.example:8546/…"
        );
        assert_eq!(
            redact_url("http://[::1]:8545/SECRET"),
            "http://[::1]:8545/…"
        );
    }

    #[test]
    fn leaves_nothing_secret_to_redact_alone() {
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(
            redact_url("http://127.0.0.1:8545/"),
            "http://127.0.0.1:8545/"
        );
    }

    #[test]
    fn unparseable_is_masked_entirely() {
        for bad in [
            "SECRET",
            "node.example/SECRET",
            "://SECRET",
            "1http://x/SECRET",
        ] {
            assert_eq!(redact_url(bad), MASK, "{bad}");
        }
    }

    #[test]
    fn redacts_every_url_inside_text() {
        let msg = "rpc: error sending request for url (https://a.example/v3/KEY1): \
                   retried http://u:KEY2@b.example:8545/x?k=KEY3, then \"https://c.example/KEY4\"";
        let out = redact_text(msg);
        for secret in ["KEY1", "KEY2", "KEY3", "KEY4"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert_eq!(
            out,
            "rpc: error sending request for url (https://a.example/…): \
             retried http://…@b.example:8545/…, then \"https://c.example/…\""
        );
        assert_eq!(redact_text("no urls: a://"), "no urls: a://");
        assert_eq!(redact_text("odd ://x here"), "odd ://x here");
    }
}
