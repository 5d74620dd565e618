//! The parsers a streamed paid response goes through (spec/HTTP.md §4.1 meters, §5.7), on
//! bytes an upstream (or a gateway, for the client) controls:
//! - a metered price from arbitrary JSON (never panics; an accepted one renders and parses
//!   back to itself);
//! - the usage reader over an arbitrary body in arbitrary chunks: the units do not depend on
//!   how the body was cut, and an absurd body costs bounded memory;
//! - the final-event splitter: the body it releases, followed by the final event it found,
//!   is exactly the input, in any chunking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_http::meter::{Meter, MeteredPrice, UnitSource};
use tally_http::stream::{final_event, FinalEvent, FinalEventSplitter, ERROR_EVENT, RECEIPT_EVENT};
use tally_http::usage::UsageReader;
use tally_http::Amount;

fn meters() -> Vec<Meter> {
    let m = |name: &str, from| Meter {
        name: name.into(),
        unit_price: Amount(1),
        from,
    };
    vec![
        m("input", UnitSource::Sse("/usage/prompt_tokens".into())),
        m("output", UnitSource::Sse("/usage/completion_tokens".into())),
        m("json", UnitSource::Json("/usage/total_tokens".into())),
        m("deep", UnitSource::Sse("/a/0/b~1c/~0d".into())),
    ]
}

/// `data` cut at the positions `cuts` gives (each byte a step of 1..=64).
fn chunks<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let step = cuts.get(i).map_or(data.len(), |c| usize::from(c % 64) + 1);
        let end = (at + step).min(data.len());
        out.push(&data[at..end]);
        at = end;
        i += 1;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let (head, body) = input.split_at(input.len().min(16));
    // A metered price from arbitrary JSON.
    if let Ok(price) = serde_json::from_slice::<MeteredPrice>(body) {
        let text = serde_json::to_string(&price).expect("renders");
        let again: MeteredPrice = serde_json::from_str(&text).expect("parses back");
        assert_eq!(again, price);
        let _ = price.charge(&[u64::MAX; tally_core::METERS], u128::MAX);
    }
    // Units do not depend on the chunking.
    let whole = {
        let mut r = UsageReader::new(&meters(), 1 << 16);
        r.chunk(body);
        r.finish()
    };
    let mut r = UsageReader::new(&meters(), 1 << 16);
    for c in chunks(body, head) {
        r.chunk(c);
    }
    assert_eq!(r.finish(), whole);
    // The splitter gives back exactly what it was fed.
    let mut s = FinalEventSplitter::default();
    let mut released = Vec::new();
    for c in chunks(body, head) {
        released.extend(s.feed(c));
    }
    let (rest, end) = s.finish();
    released.extend(rest);
    match end {
        None => assert_eq!(released, body),
        Some(FinalEvent::Receipt(v)) => {
            released.extend(final_event(RECEIPT_EVENT, &v));
            assert_eq!(released, body);
        }
        Some(FinalEvent::Error(v)) => {
            released.extend(final_event(ERROR_EVENT, &v));
            assert_eq!(released, body);
        }
    }
});
