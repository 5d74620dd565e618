//! spec/PROTOCOL.md's prefix table and body lengths agree with the code.

use tally_core::encoding::Canonical;
use tally_core::request::{REQUEST_DOMAIN, RESPONSE_DOMAIN};
use tally_core::{Authorization, Outcome, Record};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec/PROTOCOL.md");
    std::fs::read_to_string(path).expect("spec/PROTOCOL.md")
}

/// The hex column of the prefix-table row whose first cell is `name`.
fn prefix_row(spec: &str, name: &str) -> String {
    let row = spec
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("no prefix row for {name}"));
    row.split('|')
        .nth(2)
        .expect("hex cell")
        .trim()
        .trim_matches('`')
        .to_string()
}

#[test]
fn prefixes_match_the_spec() {
    let spec = spec();
    for (name, domain) in [
        ("authorization", Authorization::DOMAIN),
        ("outcome", Outcome::DOMAIN),
        ("record", Record::DOMAIN),
        ("request hash input", REQUEST_DOMAIN),
        ("response hash input", RESPONSE_DOMAIN),
    ] {
        assert_eq!(prefix_row(&spec, name), hex::encode(domain), "{name}");
    }
}

#[test]
fn body_lengths_match_the_spec() {
    let spec = spec();
    let a = Authorization {
        version: 2,
        channel_id: Default::default(),
        lane: 0,
        seq: 0,
        request_hash: Default::default(),
        max_amount: 0,
        ack_size: 0,
        ack_root: Default::default(),
        ack_cumulative: 0,
        terms_hash: Default::default(),
    };
    let o = Outcome {
        version: 2,
        channel_id: Default::default(),
        lane: 0,
        seq: 0,
        index: 0,
        authorization_hash: Default::default(),
        units: [0; tally_core::METERS],
        amount: 0,
        cumulative: 0,
        response_hash: Default::default(),
        time_ms: 0,
    };
    let r = Record::new(a, tally_core::Signature([0; 64]), o);
    for (heading, len) in [
        (
            "Prefix `tally\\0authorization\\0`; body, ",
            a.to_bytes().len() - Authorization::DOMAIN.len(),
        ),
        (
            "Prefix `tally\\0outcome\\0`; body, ",
            o.to_bytes().len() - Outcome::DOMAIN.len(),
        ),
        (
            "Prefix `tally\\0record\\0`; body, ",
            r.to_bytes().len() - Record::DOMAIN.len(),
        ),
    ] {
        assert!(
            spec.contains(&format!("{heading}{len} bytes")),
            "spec must say {heading}{len} bytes"
        );
    }
}
