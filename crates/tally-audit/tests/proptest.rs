//! Random valid multi-lane logs (lanes, lags, checkpoints, credits) audit clean, and one
//! random mutation of one record — a provider breaking a rule and signing anyway, or bytes
//! altered after signing — is always caught and named with that record's index.

#[path = "support/gen.rs"]
mod gen;

use gen::{build, Generator, Options, Tamper};
use proptest::prelude::*;
use tally_audit::{audit, AuditContext, AuditReport, Statement};
use tally_core::SecretKey;

fn run(g: &Generator, wires: &[tally_http::WireRecord]) -> AuditReport {
    let s = Statement::from_records(g.header(), wires).unwrap();
    audit(s.reader(), &AuditContext::default(), 2).unwrap()
}

fn options() -> impl Strategy<Value = Options> {
    (1u64..90, 1u32..6, 0u64..12, 0u64..30, any::<u64>()).prop_map(
        |(records, lanes, max_lag, checkpoint_every, seed)| Options {
            records,
            lanes,
            max_lag,
            checkpoint_every,
            seed,
        },
    )
}

/// Mutation `kind` by `delta` (≥ 1), made before signing.
fn tamper(kind: u8, delta: u64) -> Tamper {
    let d = delta;
    Box::new(move |g: &mut Generator| {
        let (mut a, mut o) = g.plan();
        let mut key = None;
        match kind {
            0 => {
                a.seq = a.seq.wrapping_add(d);
                o.seq = a.seq;
            }
            1 => {
                a.seq = a.seq.wrapping_sub(d);
                o.seq = a.seq;
            }
            2 => a.ack_root.0[(d % 32) as usize] ^= 1,
            3 => a.ack_cumulative += u128::from(d),
            4 => a.ack_size += d,
            5 => o.index += d,
            6 => o.cumulative += u128::from(d),
            7 if o.amount > 0 => {
                o.amount += i128::from(d);
                o.cumulative += u128::from(d);
            }
            7 => o.cumulative += u128::from(d),
            _ => key = Some(SecretKey::from_seed(&[9; 32])),
        }
        (a, o, key)
    })
}

proptest! {
    // Fewer cases in unoptimized builds, where signing is ~100 times slower.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(debug_assertions) { 16 } else { 96 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn valid_logs_audit_clean(opts in options()) {
        let (g, wires) = build(opts, vec![]);
        let report = run(&g, &wires);
        prop_assert!(report.ok(), "{}", report.render());
        prop_assert_eq!(report.records, opts.records);
        prop_assert_eq!(report.root, g.head().root.to_hex());
    }

    #[test]
    fn a_rule_broken_and_signed_is_named(
        opts in options(), at in any::<prop::sample::Index>(), kind in 0u8..9, delta in 1u64..6,
    ) {
        let at = at.index(opts.records as usize) as u64;
        let (g, wires) = build(opts, vec![(at, tamper(kind, delta))]);
        let report = run(&g, &wires);
        prop_assert!(report.about(at).count() >= 1, "kind {} at {}: {}", kind, at, report.render());
    }

    #[test]
    fn bytes_altered_after_signing_are_named(
        opts in options(), at in any::<prop::sample::Index>(), pos in any::<prop::sample::Index>(),
        step in 1u8..16, provider in any::<bool>(),
    ) {
        let at = at.index(opts.records as usize);
        let (g, mut wires) = build(opts, vec![]);
        if provider {
            wires[at].provider_signature.0[pos.index(64)] ^= step;
        } else {
            const HEX: &[u8] = b"0123456789abcdef";
            let mut bytes = wires[at].record.clone().into_bytes();
            let p = pos.index(bytes.len());
            let was = HEX.iter().position(|&c| c == bytes[p]).unwrap();
            bytes[p] = HEX[(was + usize::from(step)) % 16];
            wires[at].record = String::from_utf8(bytes).unwrap();
        }
        let report = run(&g, &wires);
        prop_assert!(report.about(at as u64).count() >= 1, "at {}: {}", at, report.render());
    }
}
