//! One test per check of the audit: a log with one record tampered (and, where a provider
//! could, re-signed) is audited, and the discrepancy is named with that record's index — and
//! nothing else is reported, so one bad record is one discrepancy, not a cascade.

#[path = "support/gen.rs"]
mod gen;

use alloy::primitives::Address;
use gen::{Generator, Options};
use tally_audit::{audit, AuditContext, AuditReport, Statement, StatementError, StatementReader};
use tally_chain::{ChannelFunding, WithdrawState};
use tally_core::hash::TreeHasher;
use tally_core::sequence::{LogState, ACK_WINDOW};
use tally_core::{Checkpoint, Hash, SecretKey};
use tally_http::WireRecord;
use tally_log::Blake3Hasher;

use gen::{build as with, Tamper};

fn statement(g: &Generator, wires: &[WireRecord]) -> Statement {
    Statement::from_records(g.header(), wires).unwrap()
}

fn run(s: &Statement) -> AuditReport {
    audit(s.reader(), &AuditContext::default(), 2).unwrap()
}

fn small() -> Options {
    Options {
        checkpoint_every: 40,
        ..Options::new(300)
    }
}

/// Audits a log with one tampered record and checks that exactly one discrepancy, of `kind`,
/// names it.
fn named(opts: Options, at: u64, kind: &str, tamper: Tamper) -> AuditReport {
    let (g, wires) = with(opts, vec![(at, tamper)]);
    let report = run(&statement(&g, &wires));
    let here: Vec<_> = report.about(at).collect();
    assert_eq!(here.len(), 1, "{}", report.render());
    assert_eq!(here[0].kind, kind, "{}", report.render());
    assert_eq!(report.discrepancy_count, 1, "{}", report.render());
    report
}

#[test]
fn a_valid_multi_lane_log_verifies_across_chunks() {
    let opts = Options {
        checkpoint_every: 500,
        ..Options::new(2500)
    };
    let s = gen::statement(opts);
    let report = run(&s);
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.records, 2500);
    assert_eq!(report.lanes, 8);
    assert_eq!(report.checkpoints, 5);
    assert!(report.prices_checked);
    let (charged, credited, net): (u128, u128, u128) = (
        report.charged.parse().unwrap(),
        report.credited.parse().unwrap(),
        report.cumulative.parse().unwrap(),
    );
    assert!(credited > 0);
    assert_eq!(charged - credited, net);
    // Same verdict and totals with one thread and with many.
    let one = audit(s.reader(), &AuditContext::default(), 1).unwrap();
    assert_eq!((one.root, one.cumulative), (report.root, report.cumulative));
}

#[test]
fn a_seq_gap_on_a_lane_is_named() {
    let r = named(
        small(),
        100,
        "sequence",
        Box::new(|g| {
            let (mut a, mut o) = g.plan();
            a.seq += 1;
            o.seq += 1;
            (a, o, None)
        }),
    );
    assert!(r.discrepancies[0].detail.contains("seq"));
}

#[test]
fn a_replayed_seq_is_named() {
    named(
        Options {
            lanes: 1,
            ..small()
        },
        60,
        "sequence",
        Box::new(|g| {
            let (mut a, mut o) = g.plan();
            a.seq -= 1;
            o.seq -= 1;
            (a, o, None)
        }),
    );
}

#[test]
fn an_acknowledgement_going_backwards_is_named() {
    // One lane acknowledging the head each time: record 50 acknowledged size 49 before.
    let opts = Options {
        lanes: 1,
        max_lag: 0,
        ..small()
    };
    let r = named(
        opts,
        51,
        "acknowledgement",
        Box::new(|g| {
            let (mut a, o) = g.plan();
            let old = g.state_at(a.ack_size - 2).unwrap();
            (a.ack_size, a.ack_root, a.ack_cumulative) = (old.size, old.root, old.cumulative);
            (a, o, None)
        }),
    );
    assert!(r.discrepancies[0].detail.contains("below"));
}

#[test]
fn an_acknowledged_root_the_log_never_had_is_named() {
    let r = named(
        small(),
        120,
        "acknowledgement",
        Box::new(|g| {
            let (mut a, o) = g.plan();
            a.ack_root = Hash([0xee; 32]);
            (a, o, None)
        }),
    );
    assert!(r.discrepancies[0].detail.contains("never had"));
}

#[test]
fn an_acknowledged_cumulative_the_log_never_had_is_named() {
    named(
        small(),
        121,
        "acknowledgement",
        Box::new(|g| {
            let (mut a, o) = g.plan();
            a.ack_cumulative += 1;
            (a, o, None)
        }),
    );
}

#[test]
fn an_acknowledgement_beyond_the_log_is_named() {
    named(
        small(),
        122,
        "acknowledgement",
        Box::new(|g| {
            let (mut a, o) = g.plan();
            a.ack_size = 123;
            (a, o, None)
        }),
    );
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "tens of thousands of signatures: run with --release, as CI does"
)]
fn an_acknowledgement_outside_the_window_is_named() {
    // A fresh lane acknowledging the empty log, ACK_WINDOW + 1 records after it: a real
    // state, but one no verifier has to remember.
    let at = ACK_WINDOW + 1;
    let opts = Options {
        lanes: 2,
        checkpoint_every: 0,
        ..Options::new(at + 2)
    };
    let r = named(
        opts,
        at,
        "acknowledgement",
        Box::new(|g| {
            let (mut a, o) = g.plan_on(Some(9));
            (a.ack_size, a.ack_root, a.ack_cumulative) = (0, Blake3Hasher.empty(), 0);
            (a, o, None)
        }),
    );
    assert!(
        r.discrepancies[0].detail.contains("outside"),
        "{}",
        r.render()
    );
}

#[test]
fn a_wrong_index_is_named() {
    named(
        small(),
        7,
        "sequence",
        Box::new(|g| {
            let (a, mut o) = g.plan();
            o.index += 1;
            (a, o, None)
        }),
    );
}

#[test]
fn a_wrong_cumulative_is_named() {
    named(
        small(),
        8,
        "cumulative",
        Box::new(|g| {
            let (a, mut o) = g.plan();
            o.cumulative += 1;
            (a, o, None)
        }),
    );
}

#[test]
fn a_bad_client_signature_is_named() {
    named(
        small(),
        9,
        "client_signature",
        Box::new(|g| {
            let (a, o) = g.plan();
            (a, o, Some(SecretKey::from_seed(&[9; 32])))
        }),
    );
}

#[test]
fn a_bad_provider_signature_is_named() {
    let (g, mut wires) = with(small(), vec![]);
    let r = wires[33].decode().unwrap();
    wires[33].provider_signature = SecretKey::from_seed(&[9; 32]).sign(b"another outcome");
    let report = run(&statement(&g, &wires));
    let here: Vec<_> = report.about(33).collect();
    assert_eq!(here.len(), 1, "{}", report.render());
    assert_eq!(here[0].kind, "provider_signature");
    assert_eq!(report.discrepancy_count, 1);
    assert_eq!(r.outcome.index, 33);
}

#[test]
fn an_overcharge_is_named() {
    // Record 11 is metered (2 per unit): one more than the price, within max_amount.
    let r = named(
        small(),
        11,
        "price",
        Box::new(|g| {
            let (a, mut o) = g.plan();
            assert!(o.units[0] > 0 && o.amount > 0);
            o.amount += 1;
            o.cumulative += 1;
            (a, o, None)
        }),
    );
    assert!(r.discrepancies[0].detail.contains("charged"));
}

#[test]
fn a_record_breaking_several_rules_is_named_for_each() {
    let (g, wires) = with(
        small(),
        vec![(
            77,
            Box::new(|g: &mut Generator| {
                let (mut a, mut o) = g.plan();
                o.index = 1000;
                o.cumulative += 3;
                a.ack_root = Hash([1; 32]);
                a.seq += 5;
                o.seq += 5;
                (a, o, None)
            }),
        )],
    );
    let report = run(&statement(&g, &wires));
    let kinds: Vec<&str> = report.about(77).map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        ["sequence", "cumulative", "acknowledgement", "sequence"],
        "{}",
        report.render()
    );
}

#[test]
fn the_audit_goes_on_past_every_discrepancy() {
    let (g, mut wires) = with(
        Options {
            checkpoint_every: 1000,
            ..Options::new(3000)
        },
        vec![
            (
                10,
                Box::new(|g: &mut Generator| {
                    let (mut a, mut o) = g.plan();
                    a.seq += 1;
                    o.seq += 1;
                    (a, o, None)
                }),
            ),
            (
                2101,
                Box::new(|g: &mut Generator| {
                    let (a, mut o) = g.plan();
                    o.amount += 1;
                    o.cumulative += 1;
                    (a, o, None)
                }),
            ),
        ],
    );
    wires[2999].provider_signature = SecretKey::from_seed(&[9; 32]).sign(b"x");
    let report = run(&statement(&g, &wires));
    assert_eq!(report.discrepancy_count, 3, "{}", report.render());
    for (i, kind) in [
        (10, "sequence"),
        (2101, "price"),
        (2999, "provider_signature"),
    ] {
        assert_eq!(report.about(i).map(|d| d.kind).collect::<Vec<_>>(), [kind]);
    }
}

#[test]
fn an_undecodable_line_is_named_and_the_rest_still_checked() {
    let (g, wires) = with(
        Options {
            checkpoint_every: 100,
            ..small()
        },
        vec![],
    );
    let mut s = statement(&g, &wires);
    // Replace line 150 with garbage and sign line 250 with another provider key.
    let mut lines: Vec<Vec<u8>> = s.body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[150] = b"{\"record\":\"zz\"}".to_vec();
    let mut bad = wires[250].clone();
    bad.provider_signature = SecretKey::from_seed(&[9; 32]).sign(b"x");
    lines[250] = serde_json::to_vec(&bad).unwrap();
    s.body = lines.join(&b'\n');
    let report = run(&s);
    assert_eq!(report.records, 300);
    assert!(
        report.about(150).any(|d| d.kind == "record"),
        "{}",
        report.render()
    );
    assert!(report.about(250).any(|d| d.kind == "provider_signature"));
    // Checkpoints at 200 and 300 cannot be checked past record 150; the one at 100 is fine.
    let unchecked = report
        .discrepancies
        .iter()
        .filter(|d| d.kind == "checkpoint" && d.detail.contains("past record 150"))
        .count();
    assert_eq!(unchecked, 2, "{}", report.render());
    assert_eq!(report.discrepancy_count, 5, "{}", report.render());
}

#[test]
fn checkpoints_the_log_never_had_are_named() {
    let (mut g, wires) = with(small(), vec![]);
    let real = g.head();
    let wrong_root = g.signed_checkpoint(Checkpoint {
        channel_id: gen::CHANNEL,
        size: 120,
        root: Hash([3; 32]),
        cumulative: 0,
    });
    let beyond = g.signed_checkpoint(Checkpoint {
        channel_id: gen::CHANNEL,
        size: real.size + 1,
        root: real.root,
        cumulative: real.cumulative,
    });
    let mut forged = g.signed_checkpoint(Checkpoint {
        channel_id: gen::CHANNEL,
        size: real.size,
        root: real.root,
        cumulative: real.cumulative + 1,
    });
    forged.note = forged.note.replace(
        &format!("cumulative {}", real.cumulative + 1),
        &format!("cumulative {}", real.cumulative + 2),
    );
    g.checkpoints.extend([wrong_root, beyond, forged]);
    let report = run(&statement(&g, &wires));
    let details: Vec<&str> = report
        .discrepancies
        .iter()
        .map(|d| d.detail.as_str())
        .collect();
    assert_eq!(report.discrepancy_count, 4, "{}", report.render());
    assert!(details.iter().any(|d| d.contains("does not verify")));
    assert!(details.iter().any(|d| d.contains("signs root")));
    assert!(details.iter().any(|d| d.contains("beyond")));
    // And the order of checkpoints: one at size 120 after the one at the end.
    assert!(report.discrepancies.iter().any(|d| d.kind == "consistency"));
}

#[test]
fn the_mirror_and_the_chain_are_compared_at_their_sizes() {
    let (g, wires) = with(small(), vec![]);
    let s = statement(&g, &wires);
    let head = g.head();
    let funding = |size: u64, root: Hash, claimed: u128| ChannelFunding {
        channel_id: gen::CHANNEL,
        payer: Address::repeat_byte(1),
        payee: Address::repeat_byte(2),
        token: Address::repeat_byte(3),
        signer: g.signer_address(),
        deposit: u128::MAX,
        claimed,
        claimed_size: size,
        claimed_root: root,
        credit_size: 0,
        settle_at: 0,
        settled: claimed,
        paid: 0,
        withdraw_delay: 60,
        withdraw: WithdrawState::None,
    };
    let good = AuditContext {
        mirror: Some((head.size, head.root)),
        onchain: Some((funding(head.size, head.root, head.cumulative), g.domain())),
        progress: None,
    };
    let report = audit(s.reader(), &good, 2).unwrap();
    assert!(report.ok(), "{}", report.render());
    assert!(report.onchain.as_ref().unwrap().matches_checkpoint);
    // A mirror that disagrees at size 40, a mirror longer than the statement, a claim at a
    // size no checkpoint has with a root the log never had.
    for (ctx, kind) in [
        (
            AuditContext {
                mirror: Some((40, Hash([4; 32]))),
                ..Default::default()
            },
            "mirror",
        ),
        (
            AuditContext {
                mirror: Some((head.size + 3, head.root)),
                ..Default::default()
            },
            "mirror",
        ),
        (
            AuditContext {
                onchain: Some((funding(41, Hash([5; 32]), 10), g.domain())),
                ..Default::default()
            },
            "chain",
        ),
    ] {
        let report = audit(s.reader(), &ctx, 2).unwrap();
        assert!(!report.ok());
        assert!(
            report.discrepancies.iter().all(|d| d.kind == kind),
            "{}",
            report.render()
        );
    }
}

#[test]
fn an_unreadable_or_old_header_stops_the_audit() {
    let s = gen::statement(Options::new(3));
    let mut header = serde_json::to_value(&s.header).unwrap();
    header["format"] = "tally-statement/v1".into();
    let mut bytes = serde_json::to_vec(&header).unwrap();
    bytes.push(b'\n');
    bytes.extend_from_slice(&s.body);
    assert!(matches!(
        StatementReader::new(&bytes[..], "old"),
        Err(StatementError::Format { .. })
    ));
    assert!(matches!(
        StatementReader::new(&b"not json\n"[..], "junk"),
        Err(StatementError::Header(_))
    ));
    assert!(matches!(
        StatementReader::new(&b""[..], "empty"),
        Err(StatementError::Header(_))
    ));
}

#[test]
fn statements_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    let g = gen::write_file(
        Options {
            checkpoint_every: 500,
            ..Options::new(2100)
        },
        &path,
    )
    .unwrap();
    let report = audit(
        StatementReader::open(&path).unwrap(),
        &AuditContext::default(),
        0,
    )
    .unwrap();
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.records, 2100);
    assert_eq!(report.checkpoints, 5);
    assert_eq!(report.root, g.head().root.to_hex());
    let _: LogState = g.head();
}

#[test]
fn an_overlong_line_is_named_without_being_kept() {
    let (g, wires) = with(small(), vec![]);
    let mut s = statement(&g, &wires);
    let mut lines: Vec<Vec<u8>> = s.body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[299] = vec![b'x'; 100_000];
    s.body = lines.join(&b'\n');
    let report = run(&s);
    let here: Vec<_> = report.about(299).collect();
    assert_eq!(here[0].kind, "record", "{}", report.render());
    assert!(
        here[0].detail.contains("100000 bytes"),
        "{}",
        report.render()
    );
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "tens of thousands of signatures: run with --release, as CI does"
)]
fn past_the_listing_limit_discrepancies_are_still_counted() {
    let n = tally_audit::audit::MAX_LISTED as u64 + 500;
    let (g, mut wires) = with(
        Options {
            checkpoint_every: 0,
            ..Options::new(n)
        },
        vec![],
    );
    for w in &mut wires {
        w.provider_signature.0[0] ^= 1;
    }
    let report = run(&statement(&g, &wires));
    assert_eq!(report.discrepancy_count, n);
    assert_eq!(report.discrepancies.len(), tally_audit::audit::MAX_LISTED);
    assert!(!report.ok());
    assert!(report.render().contains(&format!("and {} more", n - 50)));
}

#[test]
fn progress_reports_every_record() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let s = gen::statement(Options::new(2100));
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let ctx = AuditContext {
        progress: Some(Box::new(move |n| {
            counter.fetch_max(n, Ordering::Relaxed);
        })),
        ..Default::default()
    };
    assert!(audit(s.reader(), &ctx, 2).unwrap().ok());
    assert_eq!(seen.load(Ordering::Relaxed), 2100);
}
