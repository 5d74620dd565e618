//! Usage over time and breakdowns, from the table's columns (spec/BILL.md §2): calls and
//! amounts per interval and per class, drawn as pre-rendered SVG so the page needs no chart
//! code and shows them even with scripts off. Amounts are drawn by size: a credit's refund
//! shows under its own class ("credit") rather than as a negative bar, which a stacked
//! chart cannot draw.

use tally_chart::{breakdown, stacked_bars, step_for, Series, TimeSeries};

use crate::rows::Rows;

/// The most bars a chart over time has.
pub const MAX_BUCKETS: usize = 96;

/// The charts of a bill, as SVG.
pub fn charts(rows: &Rows, classes: &[String], unit: &str) -> String {
    let (calls, amount) = over_time(rows, classes);
    let mut per_class = vec![(0f64, 0f64); classes.len()];
    let mut kinds = [0f64; 3];
    for (k, &c) in rows.class.iter().enumerate() {
        let a = rows.amount[k];
        if let Some(p) = per_class.get_mut(c as usize) {
            p.0 += 1.0;
            p.1 += a.abs();
        }
        kinds[kind(a)] += 1.0;
    }
    let calls_by: Vec<(String, f64)> = classes
        .iter()
        .zip(&per_class)
        .map(|(n, p)| (n.clone(), p.0))
        .collect();
    let amount_by: Vec<(String, f64)> = classes
        .iter()
        .zip(&per_class)
        .map(|(n, p)| (n.clone(), p.1))
        .collect();
    let kind_items: Vec<(String, f64)> = KINDS
        .iter()
        .zip(kinds)
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    [
        stacked_bars("Calls over time", "calls", &calls),
        stacked_bars("Amount over time (charges and refunds)", unit, &amount),
        breakdown("Calls by route", "calls", &calls_by),
        breakdown("Amount by route (credits: refunded)", unit, &amount_by),
        breakdown("Calls by outcome", "calls", &kind_items),
    ]
    .iter()
    .map(|svg| format!(r#"<figure class="chart">{svg}</figure>"#))
    .collect()
}

/// The outcome kinds a row can be, by its net amount; the page's filter uses the same names.
pub const KINDS: [&str; 3] = ["charged", "uncharged", "credited"];

/// The kind of a net amount: an index into [`KINDS`].
pub fn kind(amount: f64) -> usize {
    if amount > 0.0 {
        0
    } else if amount == 0.0 {
        1
    } else {
        2
    }
}

/// Calls and amount (by size) per bucket and class. Rows without a time (unreadable lines) are
/// left out.
fn over_time(rows: &Rows, classes: &[String]) -> (TimeSeries, TimeSeries) {
    let timed = || rows.time_ms.iter().copied().filter(|&t| t > 0.0);
    let start = timed().fold(f64::INFINITY, f64::min);
    let end = timed().fold(0f64, f64::max);
    let (start, span) = if start.is_finite() {
        (start as u64, (end - start) as u64)
    } else {
        (0, 0)
    };
    let step = step_for(span.max(1), MAX_BUCKETS).max(1);
    let buckets = (span / step + 1) as usize;
    let empty = || -> Vec<Series> {
        classes
            .iter()
            .map(|c| Series {
                label: c.clone(),
                values: vec![0.0; buckets],
            })
            .collect()
    };
    let (mut calls, mut amount) = (empty(), empty());
    for (k, &t) in rows.time_ms.iter().enumerate() {
        if t <= 0.0 {
            continue;
        }
        let b = (((t as u64).saturating_sub(start)) / step) as usize;
        let c = rows.class[k] as usize;
        if let (Some(cs), Some(am)) = (calls.get_mut(c), amount.get_mut(c)) {
            if let (Some(x), Some(y)) = (cs.values.get_mut(b), am.values.get_mut(b)) {
                *x += 1.0;
                *y += rows.amount[k].abs();
            }
        }
    }
    let ts = |series| TimeSeries {
        start_ms: start,
        step_ms: step,
        series,
    };
    (ts(calls), ts(amount))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(times: &[f64], amounts: &[f64], classes: &[u8]) -> Rows {
        let mut r = Rows::default();
        for k in 0..times.len() {
            r.push_unreadable(classes[k]);
            r.time_ms[k] = times[k];
            r.amount[k] = amounts[k];
        }
        r
    }

    #[test]
    fn buckets_sum_to_the_rows() {
        let r = rows(
            &[1_000.0, 61_000.0, 3_601_000.0, 0.0],
            &[5.0, -2.0, 7.0, 0.0],
            &[0, 1, 0, 1],
        );
        let names = vec!["GET /a".to_string(), "credit".to_string()];
        let (calls, amount) = over_time(&r, &names);
        let total_calls: f64 = calls.series.iter().flat_map(|s| &s.values).sum();
        let total_amount: f64 = amount.series.iter().flat_map(|s| &s.values).sum();
        // The untimed row is left out.
        assert_eq!(total_calls, 3.0);
        assert_eq!(total_amount, 14.0);
        assert_eq!(calls.start_ms, 1_000);
        let buckets = calls.series[0].values.len() as u64;
        assert!(buckets as usize <= MAX_BUCKETS + 1);
        assert!(calls.step_ms * buckets > 3_600_000);
    }

    #[test]
    fn class_names_from_the_terms_are_escaped() {
        let r = rows(&[1_000.0], &[5.0], &[0]);
        let names = vec!["GET /<script>alert(1)</script>".to_string()];
        let svg = charts(&r, &names, "units");
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }

    #[test]
    fn kinds_follow_the_sign() {
        assert_eq!(KINDS[kind(3.0)], "charged");
        assert_eq!(KINDS[kind(0.0)], "uncharged");
        assert_eq!(KINDS[kind(-1.0)], "credited");
    }
}
