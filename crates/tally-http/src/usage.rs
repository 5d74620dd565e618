//! Reading the units a response reports (spec/HTTP.md §4.1 meters, §5.7 streamed receipts):
//! one reader fed the response as it passes (head, body chunks, trailers) that ends with
//! one count per meter. The gateway meters with it and the client checks the receipt with
//! it, so both read units the same way.
//!
//! Memory is bounded whatever the upstream sends: a JSON body is kept only for JSON meters
//! and only up to the response limit; a server-sent event is kept only up to
//! [`MAX_EVENT_BYTES`] (a longer one is skipped for metering, still forwarded whole).

use http::HeaderMap;
use tally_core::{Units, METERS};

use crate::meter::{Meter, UnitSource};
use crate::terms::Price;

/// The longest server-sent event scanned for usage. A usage event is a few hundred bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Units as an upstream reports them in a header or trailer: a plain decimal (surrounding
/// spaces allowed), nothing else. Anything else reads as no report, never as a guess.
pub fn parse_units(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The count at `pointer` in a JSON document, if it is a non-negative integer that fits.
pub fn json_units(doc: &[u8], pointer: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(doc).ok()?;
    value.pointer(pointer)?.as_u64()
}

/// Reads a response's units for a route's meters, as the response passes.
pub struct UsageReader {
    meters: Vec<Meter>,
    found: [Option<u64>; METERS],
    /// The body so far, for JSON meters; `None` when none needs it or it outgrew `limit`.
    body: Option<Vec<u8>>,
    limit: usize,
    events: Option<SseEvents>,
}

impl UsageReader {
    /// A reader for `meters`; JSON bodies are read up to `body_limit` bytes.
    pub fn new(meters: &[Meter], body_limit: usize) -> Self {
        let any = |f: fn(&UnitSource) -> bool| meters.iter().any(|m| f(&m.from));
        UsageReader {
            meters: meters.to_vec(),
            found: [None; METERS],
            body: any(|s| matches!(s, UnitSource::Json(_))).then(Vec::new),
            limit: body_limit,
            events: any(|s| matches!(s, UnitSource::Sse(_))).then(SseEvents::default),
        }
    }

    /// A reader for the meters of `price` (none for a fixed or free price).
    pub fn for_price(price: &Price, body_limit: u64) -> Self {
        let meters = match price {
            Price::Metered(m) => m.meters.as_slice(),
            _ => &[],
        };
        UsageReader::new(meters, usize::try_from(body_limit).unwrap_or(usize::MAX))
    }

    /// The response head: header meters.
    pub fn headers(&mut self, headers: &HeaderMap) {
        self.read_fields(headers, |s| match s {
            UnitSource::Header(h) => Some(h),
            _ => None,
        });
    }

    /// The trailers, if the response had any: trailer meters.
    pub fn trailers(&mut self, trailers: &HeaderMap) {
        self.read_fields(trailers, |s| match s {
            UnitSource::Trailer(h) => Some(h),
            _ => None,
        });
    }

    fn read_fields(&mut self, fields: &HeaderMap, name: fn(&UnitSource) -> Option<&String>) {
        for (i, m) in self.meters.iter().enumerate().take(METERS) {
            let Some(n) = name(&m.from) else { continue };
            let value = fields.get(n.as_str()).and_then(|v| v.to_str().ok());
            if let Some(u) = value.and_then(parse_units) {
                self.found[i] = Some(u);
            }
        }
    }

    /// The next bytes of the body.
    pub fn chunk(&mut self, bytes: &[u8]) {
        if let Some(body) = &mut self.body {
            if body.len() + bytes.len() > self.limit {
                self.body = None;
            } else {
                body.extend_from_slice(bytes);
            }
        }
        if let Some(events) = &mut self.events {
            let (meters, found) = (&self.meters, &mut self.found);
            events.feed(bytes, |data| note_event(meters, found, data));
        }
    }

    /// The count per meter (0 where nothing was reported), once the body has ended. An
    /// event the stream did not close with a blank line is not counted (WHATWG HTML §9.2.6:
    /// an incomplete event at the end is not dispatched).
    pub fn finish(mut self) -> Units {
        if let Some(body) = &self.body {
            for (i, m) in self.meters.iter().enumerate().take(METERS) {
                if let UnitSource::Json(p) = &m.from {
                    self.found[i] = json_units(body, p);
                }
            }
        }
        self.found.map(|u| u.unwrap_or(0))
    }
}

/// An event's data: every SSE meter whose pointer it has takes that count (the last event
/// that has it wins).
fn note_event(meters: &[Meter], found: &mut [Option<u64>; METERS], data: &[u8]) {
    if !data.starts_with(b"{") {
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for (i, m) in meters.iter().enumerate().take(METERS) {
        if let UnitSource::Sse(p) = &m.from {
            if let Some(u) = value.pointer(p).and_then(|v| v.as_u64()) {
                found[i] = Some(u);
            }
        }
    }
}

/// The `data` of server-sent events as they complete (WHATWG HTML §9.2.6: lines end with
/// CR, LF or CRLF; `data` fields join with LF; a blank line dispatches). Only `data` matters
/// for metering, so other fields are skipped.
#[derive(Default)]
struct SseEvents {
    line: Vec<u8>,
    /// The line was cut past [`MAX_EVENT_BYTES`]: skip to its end.
    line_cut: bool,
    data: Vec<u8>,
    /// The event outgrew [`MAX_EVENT_BYTES`]: it is not scanned.
    event_cut: bool,
    has_data: bool,
    /// The last byte was a CR, so an LF starting the next chunk ends nothing new.
    after_cr: bool,
}

impl SseEvents {
    fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) {
        if bytes.is_empty() {
            // Nothing arrived: a CR before it may still be followed by its LF.
            return;
        }
        let mut rest = bytes;
        if self.after_cr && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        self.after_cr = false;
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&rest[..end]);
            self.end_line(&mut on_event);
            let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
            if rest[end] == b'\r' && end + 1 == rest.len() {
                self.after_cr = true;
            }
            rest = &rest[end + if crlf { 2 } else { 1 }..];
        }
        self.push(rest);
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.line_cut {
            return;
        }
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            self.line.clear();
            self.line_cut = true;
            self.event_cut = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, on_event: &mut impl FnMut(&[u8])) {
        let line = std::mem::take(&mut self.line);
        let cut = std::mem::replace(&mut self.line_cut, false);
        if line.is_empty() && !cut {
            if self.has_data && !self.event_cut {
                on_event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            self.event_cut = false;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&line[..], &[][..]),
        };
        if field != b"data" || self.event_cut {
            return;
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
            self.event_cut = true;
            self.data.clear();
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;

    fn meter(name: &str, from: UnitSource) -> Meter {
        Meter {
            name: name.into(),
            unit_price: Amount(1),
            from,
        }
    }

    fn openai() -> Vec<Meter> {
        vec![
            meter("input", UnitSource::Sse("/usage/prompt_tokens".into())),
            meter("output", UnitSource::Sse("/usage/completion_tokens".into())),
        ]
    }

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
        : a comment\r\n\r\n\
        event: message\ndata: {\"usage\":{\"prompt_tokens\":7,\ndata: \"completion_tokens\":12}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn the_last_usage_event_wins_in_any_chunking() {
        for cut in 0..STREAM.len() {
            for split in [cut, cut / 2] {
                let mut r = UsageReader::new(&openai(), 1 << 20);
                r.chunk(&STREAM[..split]);
                r.chunk(&STREAM[split..cut]);
                r.chunk(&STREAM[cut..]);
                assert_eq!(r.finish(), [7, 12, 0, 0], "cut at {split}/{cut}");
            }
        }
    }

    #[test]
    fn cr_and_crlf_end_lines_across_chunks() {
        let text = b"data: {\"usage\":{\"prompt_tokens\":1}}\r\r\
            data: {\"usage\":{\"prompt_tokens\":2}}\r\n\r\n";
        for cut in 0..text.len() {
            let mut r = UsageReader::new(&openai(), 0);
            r.chunk(&text[..cut]);
            r.chunk(b"");
            r.chunk(&text[cut..]);
            assert_eq!(r.finish()[0], 2, "cut at {cut}");
        }
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_ends_one_line() {
        let a = b"data: {\"usage\":{\"prompt_tokens\":3,\r";
        let b = b"\ndata: \"completion_tokens\":4}}\n\n";
        let mut r = UsageReader::new(&openai(), 0);
        r.chunk(a);
        r.chunk(b"");
        r.chunk(b);
        assert_eq!(r.finish(), [3, 4, 0, 0], "one event of two data lines");
    }

    #[test]
    fn an_unfinished_or_oversized_event_reports_nothing() {
        let mut r = UsageReader::new(&openai(), 0);
        r.chunk(b"data: {\"usage\":{\"prompt_tokens\":5}}\n");
        assert_eq!(r.finish(), [0; METERS], "no blank line: never dispatched");
        let mut big = b"data: {\"usage\":{\"prompt_tokens\":5},\"pad\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES));
        big.extend_from_slice(b"\"}\n\ndata: {\"usage\":{\"completion_tokens\":3}}\n\n");
        let mut r = UsageReader::new(&openai(), 0);
        r.chunk(&big);
        assert_eq!(r.finish(), [0, 3, 0, 0]);
    }

    #[test]
    fn headers_trailers_and_json_bodies() {
        let meters = vec![
            meter("h", UnitSource::Header("x-units".into())),
            meter("t", UnitSource::Trailer("x-units".into())),
            meter("j", UnitSource::Json("/usage/total_tokens".into())),
        ];
        let mut head = HeaderMap::new();
        head.insert("x-units", "4".parse().unwrap());
        let mut trailers = HeaderMap::new();
        trailers.insert("x-units", " 9 ".parse().unwrap());
        let mut r = UsageReader::new(&meters, 1024);
        r.headers(&head);
        r.chunk(b"{\"usage\":{\"total_");
        r.chunk(b"tokens\":33}}");
        r.trailers(&trailers);
        assert_eq!(r.finish(), [4, 9, 33, 0]);
        let mut r = UsageReader::new(&meters, 8);
        r.chunk(b"{\"usage\":{\"total_tokens\":33}}");
        assert_eq!(r.finish(), [0; METERS], "a body over the limit is not read");
    }

    #[test]
    fn garbage_reads_as_no_report() {
        for text in [
            "",
            "-1",
            "1.5",
            "0x10",
            "1e3",
            "99999999999999999999",
            "7 7",
        ] {
            assert_eq!(parse_units(text), None, "{text:?}");
        }
        assert_eq!(parse_units(" 42 "), Some(42));
        for doc in [
            &b"{\"n\":-1}"[..],
            b"{\"n\":1.5}",
            b"{\"n\":\"1\"}",
            b"not json",
            b"{\"n\":1e40}",
        ] {
            assert_eq!(json_units(doc, "/n"), None);
        }
    }
}
