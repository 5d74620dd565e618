//! A bill is written for any statement the audit can read, however broken: random lines,
//! hex of the wrong length, records with random bytes, a forged checkpoint. Nothing panics,
//! every line gets a row, and the page carries the audit's verdict.

use proptest::prelude::*;
use tally_audit::{audit, AuditContext, StatementHeader, StatementReader, STATEMENT_FORMAT};
use tally_bill::{read_bill, write_page, BillOptions};
use tally_core::{ChannelId, SecretKey};
use tally_http::payment::WireEip712Sig;
use tally_http::WireCheckpoint;

fn header(checkpoint: Option<String>) -> StatementHeader {
    StatementHeader {
        format: STATEMENT_FORMAT.into(),
        channel_id: ChannelId([7; 32]),
        client_key: SecretKey::from_seed(&[1; 32]).public(),
        provider_key: SecretKey::from_seed(&[2; 32]).public(),
        terms: Some("{\"not\": \"terms\"}".into()),
        checkpoints: checkpoint
            .map(|note| {
                vec![WireCheckpoint {
                    note,
                    eip712: WireEip712Sig::from_parts((27, [1; 32], [2; 32])),
                }]
            })
            .unwrap_or_default(),
    }
}

/// A statement line: garbage, a wire record of random hex, or one shaped like a record.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| format!(
            "{{\"record\":\"{}\",\"provider_signature\":\"{}\"}}",
            hex::encode(b),
            "00".repeat(64)
        )),
        proptest::collection::vec(any::<u8>(), 435).prop_map(|mut b| {
            b[0] = 2;
            b[1] = 2;
            b[246] = 2;
            format!(
                "{{\"record\":\"{}{}\",\"provider_signature\":\"{}\"}}",
                hex::encode(b"tally\0record\0"),
                hex::encode(b),
                "11".repeat(64)
            )
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn any_statement_makes_a_page(lines in proptest::collection::vec(line(), 0..40), note in proptest::option::of("[ -~\n]{0,200}")) {
        let h = header(note);
        let body = lines.join("\n") + "\n";
        let reader = || StatementReader::with_header(h.clone(), body.as_bytes(), "test");
        let report = audit(reader(), &AuditContext::default(), 1).unwrap_or_else(|e| panic!("{e}"));
        let bill = read_bill(reader(), &report, BillOptions { evidence_cap: Some(7), ..BillOptions::default() })
            .unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(bill.rows.len() as u64, report.records);
        prop_assert!(bill.evidence_count <= 7);
        // An entry is never larger than a record's: 8 (index) + 4 + 448 + 64 + 1 + 64·32.
        prop_assert!(bill.evidence.len() <= 7 * (8 + 4 + 448 + 64 + 1 + 64 * 32));
        let mut page = Vec::new();
        write_page(&bill, &report, &mut page).unwrap_or_else(|e| panic!("{e}"));
        let page = String::from_utf8(page).unwrap_or_else(|e| panic!("{e}"));
        let records_attr = format!("data-records=\"{}\"", report.records);
        prop_assert!(page.contains(&records_attr));
        let verdict = if report.ok() { "data-verdict=\"verified\"" } else { "data-verdict=\"failed\"" };
        prop_assert!(page.contains(verdict));
        // Nothing from the statement reaches the markup unescaped.
        prop_assert!(!page.contains("<script>alert"));
    }
}

#[test]
fn a_statement_that_changed_after_its_audit_gets_no_page() {
    let h = header(None);
    let audited = "garbage\n";
    let report = audit(
        StatementReader::with_header(h.clone(), audited.as_bytes(), "first read"),
        &AuditContext::default(),
        1,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let changed = "garbage\nmore garbage\n";
    let second = StatementReader::with_header(h, changed.as_bytes(), "second read");
    assert!(matches!(
        read_bill(second, &report, BillOptions::default()),
        Err(tally_bill::BillError::Changed)
    ));
}
