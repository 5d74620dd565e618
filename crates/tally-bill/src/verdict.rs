//! The audit's verdict as the top of the page (spec/BILL.md §2): whether the bill verifies,
//! what the records add up to, what it was compared with (checkpoints, the client's mirror,
//! the chain's claim) and every discrepancy the report lists, each linked to its record.

use std::fmt::Write;

use tally_audit::AuditReport;
use tally_chart::escape;

/// Discrepancies listed on the page; the rest are counted.
pub const LISTED: usize = 200;

/// The verdict section. `data-verdict` and the `data-count` attributes are what tests and
/// scripts read; the text is for people.
pub fn render(report: &AuditReport, asset: &str, client_key_pinned: bool) -> String {
    let ok = report.ok();
    let mut s = String::new();
    let (class, mark, headline) = if ok {
        (
            "ok",
            "verified",
            "Verified: every record and checkpoint checks out".to_string(),
        )
    } else {
        (
            "bad",
            "failed",
            format!(
                "Failed: {} discrepanc{}",
                report.discrepancy_count,
                if report.discrepancy_count == 1 {
                    "y"
                } else {
                    "ies"
                }
            ),
        )
    };
    let _ = write!(
        s,
        r#"<section id="verdict" class="{class}" data-verdict="{mark}" data-records="{}" data-discrepancies="{}"><h2>{}</h2><dl>"#,
        report.records,
        report.discrepancy_count,
        escape(&headline)
    );
    let unit = if asset.is_empty() {
        "base units".to_string()
    } else {
        format!("base units of {asset}")
    };
    let rows: [(&str, String); 8] = [
        ("records", report.records.to_string()),
        ("lanes used", report.lanes.to_string()),
        ("charged", format!("{} {unit}", report.charged)),
        ("credited", format!("{} {unit}", report.credited)),
        ("net total", format!("{} {unit}", report.cumulative)),
        ("checkpoints", report.checkpoints.to_string()),
        ("log root", report.root.clone()),
        (
            "prices",
            if report.prices_checked {
                "each charge recomputed from the terms".into()
            } else {
                "not checked: the statement carries no terms".into()
            },
        ),
    ];
    for (k, v) in rows {
        let _ = write!(s, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    let _ = write!(s, "<dt>onchain</dt><dd>{}</dd>", escape(&onchain(report)));
    let mirror = match report.mirror_size {
        Some(m) => format!("compared with the client's mirror at size {m}"),
        None => "not compared with a client mirror".into(),
    };
    let _ = write!(s, "<dt>mirror</dt><dd>{}</dd>", escape(&mirror));
    let keys = if client_key_pinned {
        "the statement's client key is the client's own (checked against its profile)"
    } else {
        "as the statement names it, not pinned: make the bill with --client DIR to check it is the client's own"
    };
    let _ = write!(s, "<dt>client key</dt><dd>{}</dd></dl>", escape(keys));
    if !ok {
        s += &discrepancies(report);
    }
    s += "</section>";
    s
}

/// What the chain was found to say, in words.
fn onchain(report: &AuditReport) -> String {
    match &report.onchain {
        None => "not compared with the chain (run with --rpc to do so)".into(),
        Some(o) => format!(
            "claimed {} of a {} deposit at log size {} (root {}): {}",
            o.claimed,
            o.deposit,
            o.claimed_size,
            o.claimed_root,
            if o.matches_checkpoint {
                "matches a checkpoint the client signed"
            } else {
                "matches no checkpoint the client signed"
            }
        ),
    }
}

/// The listed discrepancies, each record linked to its row.
fn discrepancies(report: &AuditReport) -> String {
    let mut s = String::from(r#"<ol id="discrepancies">"#);
    for d in report.discrepancies.iter().take(LISTED) {
        let place = match d.index {
            Some(i) => format!(r##"<a href="#record={i}" data-index="{i}">record {i}</a> "##),
            None => String::new(),
        };
        let _ = write!(
            s,
            "<li>{place}<code>{}</code> {}</li>",
            escape(d.kind),
            escape(&d.detail)
        );
    }
    s += "</ol>";
    let shown = report.discrepancies.len().min(LISTED) as u64;
    if report.discrepancy_count > shown {
        let _ = write!(
            s,
            "<p>… and {} more (run <code>tally verify</code> for the full list).</p>",
            report.discrepancy_count - shown
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_audit::{Discrepancy, Totals};

    fn report(discrepancies: Vec<Discrepancy>) -> AuditReport {
        let count = discrepancies.len() as u64;
        AuditReport {
            channel_id: "ab".repeat(32),
            records: 3,
            root: "00".repeat(32),
            cumulative: "30".into(),
            charged: "30".into(),
            credited: "0".into(),
            checkpoints: 1,
            lanes: 1,
            prices_checked: true,
            onchain: None,
            mirror_size: None,
            discrepancies,
            discrepancy_count: count,
            totals: Totals::default(),
            seconds: 0.0,
            records_per_second: 0.0,
        }
    }

    #[test]
    fn a_clean_report_is_verified_and_a_broken_one_links_its_records() {
        let ok = render(&report(vec![]), "0xasset", true);
        assert!(ok.contains("checked against its profile"), "{ok}");
        assert!(ok.contains(r#"data-verdict="verified""#), "{ok}");
        assert!(ok.contains("30 base units of 0xasset"), "{ok}");
        let bad = render(
            &report(vec![Discrepancy {
                index: Some(2),
                kind: "price",
                detail: "charged <b>11</b>".into(),
            }]),
            "",
            false,
        );
        assert!(bad.contains(r#"data-verdict="failed""#), "{bad}");
        assert!(bad.contains("not pinned"), "{bad}");
        assert!(bad.contains(r##"href="#record=2""##), "{bad}");
        assert!(bad.contains("charged &lt;b&gt;11&lt;/b&gt;"), "{bad}");
        assert!(!bad.contains("<b>"), "{bad}");
    }
}
