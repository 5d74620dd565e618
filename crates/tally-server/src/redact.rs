//! Keeping secrets out of logs: a node URL often carries an API key in its path, query or
//! user info (`https://node.example/v2/<key>`), and errors from HTTP clients quote the URL.
//! Everything logged about the chain goes through here first.

/// `url` with only scheme, host and port kept; path, query and user info become `…`.
///
/// ```
/// use tally_server::redact::redact_url;
/// assert_eq!(redact_url("https://u:p@node.example:8545/v2/SECRET?k=1"), "https://node.example:8545/…");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if end == rest.len() && host.len() == authority.len() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/…")
    }
}

/// `text` with every `http://` or `https://` URL in it redacted by [`redact_url`].
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["http://", "https://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(tail.len());
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_paths_queries_and_userinfo_are_removed() {
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        assert_eq!(
            redact_url("https://n.example/v3/abc123"),
            "https://n.example/…"
        );
        assert_eq!(
            redact_url("https://n.example?key=abc123"),
            "https://n.example/…"
        );
        assert_eq!(
            redact_url("https://user:abc123@n.example"),
            "https://n.example/…"
        );
        assert_eq!(redact_url("not a url abc123"), "…");
    }

    #[test]
    fn urls_inside_error_text_are_redacted() {
        let e = "error sending request for url (https://n.example/v3/abc123): connection refused";
        let r = redact_text(e);
        assert!(!r.contains("abc123"), "{r}");
        assert_eq!(
            r,
            "error sending request for url (https://n.example/…): connection refused"
        );
        assert_eq!(redact_text("no url here"), "no url here");
    }
}
