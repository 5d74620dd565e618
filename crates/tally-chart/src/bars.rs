//! The stacked bar chart over time (revenue and calls per bucket, one layer per label).

use crate::svg::{clean, label, nice_max, no_data, open, px, value, FONT, PALETTE};
use crate::time::{duration, utc_full, utc_tick};
use crate::{escape, TimeSeries};

const W: u32 = 640;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 30.0;
const PLOT_H: f64 = 160.0;
const LEGEND_COLS: usize = 3;
const LEGEND_ROW: f64 = 18.0;
/// At most this many labelled ticks on the time axis.
const MAX_TICKS: usize = 6;

/// A stacked bar chart over time as a self-contained inline <svg> (axes with a few labelled ticks, UTC time labels, y max label, a legend, <title> tooltips per bar with the exact value). `unit` is appended to values (e.g. "calls", "USDC").
///
/// Every drawn bar is a `<rect class="bar">` whose height is proportional to its value
/// (the y axis runs from 0 to a "nice" maximum at or above the largest stacked total).
/// Missing values (a series shorter than the longest) and NaN, infinite or negative
/// values draw as zero. No series or no buckets gives a "no data" chart.
pub fn stacked_bars(title: &str, unit: &str, ts: &TimeSeries) -> String {
    let n = ts.series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    if n == 0 {
        return no_data(title, W);
    }
    let at = |j: usize, k: usize| clean(ts.series[j].values.get(k).copied().unwrap_or(0.0));
    let totals: Vec<f64> = (0..n)
        .map(|k| (0..ts.series.len()).map(|j| at(j, k)).sum())
        .collect();
    let ymax = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let legend_rows = ts.series.len().div_ceil(LEGEND_COLS);
    let h = TOP + PLOT_H + 40.0 + legend_rows as f64 * LEGEND_ROW;
    let mut s = open(title, W, h.ceil() as u32);
    s.push_str(&axes(ymax, unit));
    let slot = (f64::from(W) - LEFT - RIGHT) / n as f64;
    let bar_w = (slot * 0.8).max(0.5);
    let unit = escape(unit);
    for k in 0..n {
        let x = LEFT + k as f64 * slot + (slot - bar_w) / 2.0;
        let t0 = ts
            .start_ms
            .saturating_add(ts.step_ms.saturating_mul(k as u64));
        let when = utc_full(t0);
        let mut base = TOP + PLOT_H;
        for (j, series) in ts.series.iter().enumerate() {
            let v = at(j, k);
            if v <= 0.0 {
                continue;
            }
            let bh = v / ymax * PLOT_H;
            base -= bh;
            s.push_str(&format!(
                r#"<rect class="bar" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} · {} UTC: {} {}</title></rect>"#,
                px(x),
                px(base),
                px(bar_w),
                px(bh),
                PALETTE[j % PALETTE.len()],
                escape(&series.label),
                when,
                value(v),
                unit
            ));
        }
    }
    s.push_str(&time_axis(ts.start_ms, ts.step_ms, n, slot));
    s.push_str(&legend(ts, TOP + PLOT_H + 40.0));
    s.push_str("</svg>");
    s
}

/// The y axis: a baseline, a mid and a top grid line, `0`, half and the maximum labelled.
fn axes(ymax: f64, unit: &str) -> String {
    let right = f64::from(W) - RIGHT;
    let mut s = String::new();
    for (frac, text) in [
        (0.0, "0".to_string()),
        (0.5, value(ymax / 2.0)),
        (1.0, value(ymax)),
    ] {
        let y = TOP + PLOT_H - frac * PLOT_H;
        let stroke = if frac == 0.0 { "#888" } else { "#ddd" };
        s.push_str(&format!(
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{stroke}" stroke-width="1"/><text x="{}" y="{}" font-size="11" text-anchor="end" {FONT}>{}</text>"#,
            px(LEFT),
            px(right),
            px(LEFT - 4.0),
            px(y + 4.0),
            escape(&text)
        ));
    }
    s.push_str(&format!(
        r#"<text x="{}" y="{}" font-size="11" text-anchor="end" {FONT}>{}</text>"#,
        px(right),
        px(TOP - 8.0),
        escape(unit)
    ));
    s
}

/// Labelled ticks under at most [`MAX_TICKS`] bucket starts, and a caption with the
/// first bucket's full UTC time and the bucket width.
fn time_axis(start_ms: u64, step_ms: u64, n: usize, slot: f64) -> String {
    let every = n.div_ceil(MAX_TICKS).max(1);
    let y = TOP + PLOT_H;
    let mut s = String::new();
    for k in (0..n).step_by(every) {
        let x = LEFT + k as f64 * slot;
        let t = start_ms.saturating_add(step_ms.saturating_mul(k as u64));
        s.push_str(&format!(
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#888" stroke-width="1"/><text x="{x}" y="{}" font-size="11" text-anchor="middle" {FONT}>{}</text>"##,
            px(y),
            px(y + 4.0),
            px(y + 16.0),
            utc_tick(t, step_ms),
            x = px(x)
        ));
    }
    s.push_str(&format!(
        r#"<text x="{}" y="{}" font-size="10" {FONT}>UTC, from {} · {} per bar</text>"#,
        px(LEFT),
        px(y + 30.0),
        utc_full(start_ms),
        duration(step_ms)
    ));
    s
}

/// One swatch and label per series, [`LEGEND_COLS`] to a row.
fn legend(ts: &TimeSeries, top: f64) -> String {
    let col_w = (f64::from(W) - LEFT - RIGHT) / LEGEND_COLS as f64;
    let mut s = String::new();
    for (j, series) in ts.series.iter().enumerate() {
        let x = LEFT + (j % LEGEND_COLS) as f64 * col_w;
        let y = top + (j / LEGEND_COLS) as f64 * LEGEND_ROW;
        s.push_str(&format!(
            r#"<rect class="swatch" x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11" {FONT}>{}</text>"#,
            px(x),
            px(y),
            PALETTE[j % PALETTE.len()],
            px(x + 14.0),
            px(y + 9.0),
            label(&series.label)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Series;

    fn ts(series: Vec<(&str, Vec<f64>)>) -> TimeSeries {
        TimeSeries {
            start_ms: 1_796_612_940_000,
            step_ms: 60_000,
            series: series
                .into_iter()
                .map(|(l, v)| Series {
                    label: l.to_string(),
                    values: v,
                })
                .collect(),
        }
    }

    /// The `height` attribute of every bar, in document order.
    fn bar_heights(svg: &str) -> Vec<f64> {
        svg.split(r#"<rect class="bar""#)
            .skip(1)
            .map(|r| {
                let h = r.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn bar_heights_are_proportional_to_values() {
        let svg = stacked_bars(
            "Calls",
            "calls",
            &ts(vec![("GET /a", vec![10.0, 5.0, 0.0, 2.5])]),
        );
        // ymax is 10, so the plot height (160) is 10 calls; zero draws no bar.
        assert_eq!(bar_heights(&svg), vec![160.0, 80.0, 40.0]);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains("GET /a · 2026-12-07 03:09:00 UTC: 10 calls</title>"));
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
    }

    #[test]
    fn layers_stack_and_share_one_scale() {
        let svg = stacked_bars(
            "Revenue",
            "USDC",
            &ts(vec![("a", vec![1.0, 3.0]), ("b", vec![1.0, 1.0])]),
        );
        // largest total 4 → nice max 5 → 32 px per unit.
        assert_eq!(bar_heights(&svg), vec![32.0, 32.0, 96.0, 32.0]);
        assert!(svg.contains(">5</text>"), "y max label");
        assert_eq!(svg.matches("class=\"swatch\"").count(), 2);
    }

    #[test]
    fn labels_are_escaped_everywhere() {
        let svg = stacked_bars(
            "<script>t</script>",
            "<u>",
            &ts(vec![("<script>alert(1)</script>", vec![1.0])]),
        );
        assert!(!svg.contains("<script"));
        assert!(!svg.contains("<u>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn empty_input_renders_no_data() {
        for t in [ts(vec![]), ts(vec![("a", vec![])])] {
            let svg = stacked_bars("Calls", "calls", &t);
            assert!(svg.contains(">no data</text>"));
            assert!(!svg.contains("class=\"bar\""));
            assert!(svg.ends_with("</svg>"));
        }
    }

    #[test]
    fn bad_values_never_reach_the_svg() {
        let svg = stacked_bars(
            "x",
            "u",
            &ts(vec![(
                "a",
                vec![f64::NAN, f64::INFINITY, -3.0, f64::NEG_INFINITY, 2.0],
            )]),
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(bar_heights(&svg), vec![160.0]);
        let all_bad = stacked_bars("x", "u", &ts(vec![("a", vec![f64::NAN, -1.0])]));
        assert!(!all_bad.contains("NaN") && !all_bad.contains("class=\"bar\""));
    }

    #[test]
    fn output_is_deterministic() {
        let t = ts(vec![("a", vec![1.0, 2.0]), ("b", vec![0.5])]);
        assert_eq!(stacked_bars("t", "u", &t), stacked_bars("t", "u", &t));
    }
}
