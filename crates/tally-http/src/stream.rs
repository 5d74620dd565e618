//! The end of a streamed paid response (spec/HTTP.md §5.7): after the last byte the upstream
//! sent, an event stream carries one more event, `payment-response` (or `payment-error` when
//! nothing could be recorded), that is not part of the hashed body.
//!
//! The gateway renders it with [`final_event`]; the client separates it from the body with
//! [`FinalEventSplitter`], releasing body bytes as they arrive and holding back only what
//! could still be the start of the final event.

/// The event carrying the receipt: its data is the `PAYMENT-RESPONSE` value.
pub const RECEIPT_EVENT: &str = "payment-response";
/// The event saying that nothing was recorded: its data is the error body JSON (§8).
pub const ERROR_EVENT: &str = "payment-error";

/// Every final event starts with these bytes. The two line breaks close whatever line and
/// event the upstream left open, so the final event never merges into the upstream's.
const MARKER: &[u8] = b"\n\nevent: payment-";
/// A final event is a header value (at most a few KiB) or an error body: anything longer
/// after a marker is the upstream's own bytes.
const MAX_FINAL: usize = 16 * 1024;

/// The bytes appended after the body: `\n\nevent: <name>\ndata: <data>\n\n`. `data` must be
/// one line (base64 or compact JSON).
pub fn final_event(name: &str, data: &str) -> Vec<u8> {
    format!("\n\nevent: {name}\ndata: {data}\n\n").into_bytes()
}

/// A final event, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalEvent {
    /// `payment-response`: the `PAYMENT-RESPONSE` value.
    Receipt(String),
    /// `payment-error`: the error body JSON.
    Error(String),
}

/// Splits a streamed event-stream body from its final event, as the bytes arrive.
#[derive(Default)]
pub struct FinalEventSplitter {
    held: Vec<u8>,
}

impl FinalEventSplitter {
    /// Takes the next bytes received; returns the body bytes that are now certainly body.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match find(&self.held, MARKER) {
                None => {
                    let keep = (MARKER.len() - 1).min(self.held.len());
                    let release = self.held.len() - keep;
                    out.extend(self.held.drain(..release));
                    return out;
                }
                Some(pos) => {
                    out.extend(self.held.drain(..pos));
                    if self.cannot_be_final() {
                        // The upstream's own bytes: release the first and look again.
                        out.extend(self.held.drain(..1));
                        continue;
                    }
                    return out;
                }
            }
        }
    }

    /// Whether the held bytes (starting at a marker) are already known not to be the end:
    /// too long, or a complete event followed by more bytes.
    fn cannot_be_final(&self) -> bool {
        if self.held.len() > MAX_FINAL {
            return true;
        }
        let after = &self.held[MARKER.len()..];
        find(after, b"\n\n").is_some_and(|end| end + 2 < after.len())
    }

    /// The stream ended: the rest of the body and the final event, if the held bytes are
    /// exactly one (else they are body too, and the stream has no final event).
    pub fn finish(self) -> (Vec<u8>, Option<FinalEvent>) {
        match Self::parse(&self.held) {
            Some(end) => (Vec::new(), Some(end)),
            None => (self.held, None),
        }
    }

    fn parse(held: &[u8]) -> Option<FinalEvent> {
        let text = std::str::from_utf8(held).ok()?;
        let rest = text.strip_prefix("\n\nevent: ")?.strip_suffix("\n\n")?;
        let (name, data) = rest.split_once("\ndata: ")?;
        if data.contains(['\n', '\r']) {
            return None;
        }
        match name {
            RECEIPT_EVENT => Some(FinalEvent::Receipt(data.to_string())),
            ERROR_EVENT => Some(FinalEvent::Error(data.to_string())),
            _ => None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<u8>, Option<FinalEvent>) {
        let mut s = FinalEventSplitter::default();
        let mut body = Vec::new();
        for c in chunks {
            body.extend(s.feed(c));
        }
        let (rest, end) = s.finish();
        body.extend(rest);
        (body, end)
    }

    #[test]
    fn the_body_and_its_receipt_come_apart_in_any_chunking() {
        let body: &[u8] = b"data: a\n\nevent: payment-x\ndata: fake\n\ndata: b\n\n";
        let mut all = body.to_vec();
        all.extend(final_event(RECEIPT_EVENT, "eyJzdWNjZXNzIjp0cnVlfQ=="));
        for a in 0..all.len() {
            for b in a..all.len() {
                let (got, end) = split(&[&all[..a], &all[a..b], &all[b..]]);
                assert_eq!(got, body, "cuts {a} {b}");
                assert_eq!(
                    end,
                    Some(FinalEvent::Receipt("eyJzdWNjZXNzIjp0cnVlfQ==".into()))
                );
            }
        }
    }

    #[test]
    fn an_unfinished_body_has_no_final_event() {
        let (body, end) = split(&[b"data: a\n\ndata: b"]);
        assert_eq!(body, b"data: a\n\ndata: b");
        assert_eq!(end, None);
        let mut cut = b"data: a\n\n".to_vec();
        cut.extend_from_slice(&final_event(RECEIPT_EVENT, "abc")[..20]);
        assert_eq!(split(&[&cut]).1, None);
        let (body, end) = split(&[b"x", &final_event(ERROR_EVENT, "{\"error\":\"e\"}")]);
        assert_eq!(body, b"x");
        assert_eq!(end, Some(FinalEvent::Error("{\"error\":\"e\"}".into())));
    }

    #[test]
    fn a_long_marker_lookalike_is_released() {
        let mut body = b"\n\nevent: payment-".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_FINAL + 10));
        let mut s = FinalEventSplitter::default();
        let out = s.feed(&body);
        assert_eq!(out.len(), body.len() - (MARKER.len() - 1));
    }
}
