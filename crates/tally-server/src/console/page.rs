//! The console's HTML (spec/HTTP.md §11.4): rendered on the server from a [`ConsoleData`],
//! no script, one inline `<style>` allowed by the response's CSP nonce, charts as inline SVG
//! from tally-chart. Every value that reaches the page passes through [`escape`]; amounts
//! carry their exact base units in a `data-base` attribute next to the formatted text.

use std::fmt::Write;

use tally_chart::{breakdown, escape, stacked_bars, Series, TimeSeries};

use super::data::{ConsoleData, FundingRow, MAX_CHANNELS, MAX_RECORDS_PER_CHANNEL};
use super::settlement::SettlementState;

/// Channels drawn as their own layer in the activity charts; the rest are summed as "other".
const MAX_LAYERS: usize = 6;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1100px}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.8rem}\
table{border-collapse:collapse;font-size:.85rem}td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:right}\
td.id,th.id{text-align:left;font-family:monospace}.muted{color:#666;font-size:.85rem}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:1rem}\
svg.tally-chart{width:100%;max-width:640px;height:auto;border:1px solid #eee}\
form.inline{display:inline}.err{color:#b00020}input{font-family:monospace;width:28rem}";

fn head(title: &str, nonce: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style nonce=\"{}\">{STYLE}</style></head><body>",
        escape(title),
        escape(nonce)
    )
}

/// The login page: a form that posts the admin token, and an optional generic message.
/// It shows no data at all.
pub fn login_page(message: Option<&str>, nonce: &str) -> String {
    let mut s = head("tally console: sign in", nonce);
    s.push_str("<h1>tally provider console</h1>");
    if let Some(m) = message {
        let _ = write!(s, "<p class=\"err\" id=\"login-error\">{}</p>", escape(m));
    }
    s.push_str(
        "<form id=\"login\" method=\"post\" action=\"/tally/console/login\">\
<label for=\"token\">Admin token</label><br>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required> \
<button type=\"submit\">Sign in</button></form>\
<p class=\"muted\">The admin token is the one in the gateway's <code>admin_token_file</code>.</p>\
</body></html>",
    );
    s
}

/// An amount in whole tokens when the decimals are known (`1.5`), else in base units.
pub fn amount(base: u128, decimals: Option<u8>) -> String {
    let Some(d) = decimals.filter(|d| *d > 0 && *d <= 38) else {
        return base.to_string();
    };
    let scale = 10u128.pow(u32::from(d));
    let (whole, frac) = (base / scale, base % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = usize::from(d));
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// An amount as a number for the charts (whole tokens when the decimals are known).
fn amount_f64(base: u128, decimals: Option<u8>) -> f64 {
    let d = decimals.filter(|d| *d <= 38).unwrap_or(0);
    base as f64 / 10f64.powi(i32::from(d))
}

fn amount_cell(field: &str, base: u128, decimals: Option<u8>) -> String {
    format!(
        "<td data-field=\"{field}\" data-base=\"{base}\">{}</td>",
        escape(&amount(base, decimals))
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a unix time in seconds (tally-chart's one date format).
pub fn utc(secs: u64) -> String {
    format!("{} UTC", tally_chart::utc_full(secs.saturating_mul(1000)))
}

/// The console page.
pub fn console_page(data: &ConsoleData, nonce: &str) -> String {
    let mut s = head("tally console", nonce);
    let units = match data.decimals {
        Some(d) => format!("amounts in whole tokens ({d} decimals)"),
        None => "amounts in token base units".to_string(),
    };
    let _ = write!(
        s,
        "<h1>tally provider console</h1><p class=\"muted\">Provider key <code>{}</code> · chain {} · token <code>{}</code> · payee <code>{}</code> · {} · generated {}</p>\
<form class=\"inline\" method=\"post\" action=\"/tally/console/logout\"><button type=\"submit\">Sign out</button></form>",
        escape(&data.provider_key),
        data.chain_id,
        escape(&data.asset),
        escape(&data.pay_to),
        escape(&units),
        utc(data.generated_at_ms / 1000)
    );
    s.push_str(&totals(data));
    s.push_str(&channels(data));
    s.push_str(&charts(data));
    s.push_str(&settlement(&data.settlement));
    s.push_str(&credits(data));
    s.push_str("</body></html>");
    s
}

fn totals(data: &ConsoleData) -> String {
    let t = &data.totals;
    let d = data.decimals;
    format!(
        "<h2>Since start</h2><table id=\"totals\"><tr><th>Metered (records)</th><th>Free calls</th><th>Replays</th><th>Checkpoints</th><th>Charged</th><th>Credited</th></tr>\
<tr><td data-field=\"metered\">{}</td><td data-field=\"free\">{}</td><td data-field=\"replays\">{}</td><td data-field=\"checkpoints\">{}</td>{}{}</tr></table>\
<p class=\"muted\">From the gateway's metrics registry (the counters <code>/metrics</code> exports), since this process started.</p>",
        t.metered,
        t.free,
        t.replays,
        t.checkpoints,
        amount_cell("charged", t.charged.0, d),
        amount_cell("credited", t.credited.0, d)
    )
}

fn funding_cells(f: Option<&FundingRow>, error: Option<&str>, d: Option<u8>) -> String {
    let Some(f) = f else {
        let why = error.unwrap_or("unavailable");
        return format!(
            "<td colspan=\"4\" class=\"err\" data-field=\"funding\">{}</td>",
            escape(why)
        );
    };
    let withdraw = match f.withdraw_deadline {
        Some(at) => format!("withdrawing; claims stop {}", utc(at)),
        None => f.withdraw.to_string(),
    };
    let last = if f.settle_at == 0 {
        "none".to_string()
    } else {
        format!("size {}, final {}", f.claimed_size, utc(f.settle_at))
    };
    format!(
        "{}{}<td data-field=\"claim\">{}</td><td data-field=\"withdraw\">{}</td>",
        amount_cell("deposit", f.deposit.0, d),
        amount_cell("claimed", f.claimed.0, d),
        escape(&last),
        escape(&withdraw)
    )
}

fn channels(data: &ConsoleData) -> String {
    let d = data.decimals;
    let mut s = format!(
        "<h2>Channels</h2><p class=\"muted\">{} channel(s) in the log{}. State as <code>GET /tally/v1/channels/{{id}}</code> answers it; deposit, claim and withdrawal from the gateway's funding view of the chain.</p>",
        data.channels_in_log,
        if data.channels_in_log > MAX_CHANNELS {
            format!(", the first {MAX_CHANNELS} shown")
        } else {
            String::new()
        }
    );
    s.push_str("<table id=\"channels\"><tr><th class=\"id\">Channel</th><th>Records</th><th>Cumulative</th><th>Last checkpoint</th><th>Deposit</th><th>Claimed</th><th>Last claim</th><th>Withdrawal</th></tr>");
    if data.channels.is_empty() {
        s.push_str("<tr><td colspan=\"8\" class=\"id\">no channels yet</td></tr>");
    }
    for c in &data.channels {
        if let Some(e) = &c.state_error {
            let _ = write!(
                s,
                "<tr data-channel=\"{id}\"><td class=\"id\" data-field=\"channel\">{id}</td><td colspan=\"7\" class=\"err\" data-field=\"state\">state unavailable: {}</td></tr>",
                escape(e),
                id = escape(&c.channel_id)
            );
            continue;
        }
        let _ = write!(
            s,
            "<tr data-channel=\"{id}\"><td class=\"id\" data-field=\"channel\">{id}</td><td data-field=\"size\">{}</td>{}<td data-field=\"checkpoint\" data-base=\"{}\">{} at size {}</td>{}</tr>",
            c.size,
            amount_cell("cumulative", c.cumulative.0, d),
            c.checkpoint_cumulative.0,
            escape(&amount(c.checkpoint_cumulative.0, d)),
            c.checkpoint_size,
            funding_cells(c.funding.as_ref(), c.funding_error.as_deref(), d),
            id = escape(&c.channel_id)
        );
    }
    s.push_str("</table>");
    s
}

/// Short label of a channel in a chart legend.
fn short(id: &str) -> String {
    format!("{}…", id.get(..12).unwrap_or(id))
}

/// The activity series as chart layers: the [`MAX_LAYERS`] channels with the most calls,
/// then the rest summed as "other".
fn layers(data: &ConsoleData, revenue: bool) -> TimeSeries {
    let a = &data.activity;
    let mut rows: Vec<(String, Vec<f64>, u64)> = a
        .series
        .iter()
        .map(|s| {
            let values = if revenue {
                s.revenue
                    .iter()
                    .map(|v| amount_f64(v.0, data.decimals))
                    .collect()
            } else {
                s.calls.iter().map(|c| *c as f64).collect()
            };
            (short(&s.channel_id), values, s.calls.iter().sum())
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    let mut series: Vec<Series> = Vec::new();
    let mut other = vec![0.0; a.buckets];
    for (i, (label, values, _)) in rows.into_iter().enumerate() {
        if i < MAX_LAYERS {
            series.push(Series { label, values });
        } else {
            for (o, v) in other.iter_mut().zip(values) {
                *o += v;
            }
        }
    }
    if a.series.len() > MAX_LAYERS {
        series.push(Series {
            label: "other".into(),
            values: other,
        });
    }
    TimeSeries {
        start_ms: a.start_ms,
        step_ms: a.step_ms,
        series,
    }
}

fn charts(data: &ConsoleData) -> String {
    let unit = if data.decimals.is_some() {
        "tokens"
    } else {
        "base units"
    };
    let refusals: Vec<(String, f64)> = data
        .refusals
        .iter()
        .map(|r| (r.reason.clone(), r.count as f64))
        .collect();
    format!(
        "<h2>Calls and revenue, last 24 h</h2><p class=\"muted\">From the log store: each shown channel's newest {MAX_RECORDS_PER_CHANNEL} records, bucketed by their <code>time_ms</code>; revenue is the sum of charges (credits are listed below).</p>\
<div class=\"charts\" id=\"activity\">{}{}</div>\
<h2>Refusals by reason</h2><p class=\"muted\">From the metrics registry, since start.</p><div class=\"charts\" id=\"refusals\">{}</div>",
        stacked_bars("Paid calls", "calls", &layers(data, false)),
        stacked_bars("Revenue", unit, &layers(data, true)),
        breakdown("Refusals", "refusals", &refusals)
    )
}

fn settlement(s: &SettlementState) -> String {
    let mut out = String::from("<h2>Claims</h2><div id=\"settlement\">");
    if !s.running {
        out.push_str("<p data-field=\"settlement\">no settlement worker: claims are manual (<code>tally settle</code>).</p></div>");
        return out;
    }
    let _ = write!(
        out,
        "<p data-field=\"settlement\">settlement worker: {} tick(s), {} failed{}.</p>",
        s.ticks,
        s.errors,
        s.last_error
            .as_deref()
            .map(|e| format!("; last error: {}", escape(e)))
            .unwrap_or_default()
    );
    match &s.in_flight {
        Some(c) => {
            let _ = write!(
                out,
                "<p>Pending claim <code>{}</code> for {} channel(s).</p>",
                escape(&c.tx),
                c.channels.len()
            );
        }
        None => out.push_str("<p>No claim pending.</p>"),
    }
    if let Some((tx, ok)) = &s.last_confirmed {
        let _ = write!(
            out,
            "<p>Last confirmed claim <code>{}</code>: {}.</p>",
            escape(tx),
            if *ok { "succeeded" } else { "reverted" }
        );
    }
    if !s.waiting.is_empty() {
        let _ = write!(
            out,
            "<p>{} channel(s) wait for a challenge window to end before the next claim.</p>",
            s.waiting.len()
        );
    }
    out.push_str("<table id=\"failed-claims\"><tr><th class=\"id\">Failed claim: channel</th><th class=\"id\">Why</th></tr>");
    if s.failed.is_empty() {
        out.push_str("<tr><td colspan=\"2\" class=\"id\">none</td></tr>");
    }
    for f in &s.failed {
        let _ = write!(
            out,
            "<tr><td class=\"id\">{}</td><td class=\"id\">{}</td></tr>",
            escape(&f.channel),
            escape(&f.reason)
        );
    }
    out.push_str("</table></div>");
    out
}

fn credits(data: &ConsoleData) -> String {
    let mut s = String::from(
        "<h2>Disputes and credits</h2><p class=\"muted\">Credit records (refunds granted to disputes, spec/HTTP.md §7) among the records read; a refused dispute is counted under its refusal reason.</p>\
<table id=\"credits\"><tr><th class=\"id\">Channel</th><th>Record</th><th>Credited</th><th>When</th></tr>",
    );
    if data.credits.is_empty() {
        s.push_str("<tr><td colspan=\"4\" class=\"id\">no credits</td></tr>");
    }
    for c in &data.credits {
        let _ = write!(
            s,
            "<tr><td class=\"id\">{}</td><td>{}</td>{}<td>{}</td></tr>",
            escape(&c.channel_id),
            c.index,
            amount_cell("credit", c.amount.0, data.decimals),
            utc(c.time_ms / 1000)
        );
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::super::data::*;
    use super::*;
    use tally_http::Amount;

    fn sample() -> ConsoleData {
        ConsoleData {
            generated_at_ms: 1_796_612_991_000,
            provider_key: "pk".into(),
            chain_id: 31337,
            asset: "0xcc".into(),
            pay_to: "0xbb".into(),
            decimals: None,
            channels_in_log: 1,
            channels: vec![ChannelRow {
                channel_id: "ab".repeat(32),
                size: 3,
                cumulative: Amount(30),
                checkpoint_size: 2,
                checkpoint_cumulative: Amount(20),
                restore_required: false,
                funding: Some(FundingRow {
                    deposit: Amount(1_000_000),
                    claimed: Amount(0),
                    claimed_size: 0,
                    paid: Amount(0),
                    settle_at: 0,
                    withdraw: "withdrawing",
                    withdraw_deadline: Some(1_796_612_991),
                    withdraw_delay: 3600,
                }),
                funding_error: None,
                state_error: None,
            }],
            totals: Totals {
                metered: 3,
                free: 0,
                replays: 0,
                checkpoints: 1,
                charged: Amount(30),
                credited: Amount(0),
            },
            refusals: vec![Refusal {
                reason: "<script>x</script>".into(),
                count: 2,
            }],
            activity: Activity {
                start_ms: 1_796_612_400_000,
                step_ms: 1_800_000,
                buckets: 2,
                max_records_per_channel: MAX_RECORDS_PER_CHANNEL,
                series: vec![ActivitySeries {
                    channel_id: "ab".repeat(32),
                    calls: vec![0, 3],
                    revenue: vec![Amount(0), Amount(30)],
                }],
            },
            credits: vec![],
            settlement: SettlementState::default(),
        }
    }

    #[test]
    fn amounts_follow_the_decimals() {
        assert_eq!(amount(1_500_000, Some(6)), "1.5");
        assert_eq!(amount(1_000_000, Some(6)), "1");
        assert_eq!(amount(42, Some(6)), "0.000042");
        assert_eq!(amount(42, None), "42");
        assert_eq!(amount(u128::MAX, Some(18)).len(), 40);
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(1_796_612_991), "2026-12-07 03:09:51 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn the_page_shows_channels_charts_and_escapes_everything() {
        let html = console_page(&sample(), "n0nce");
        assert!(html.contains(&format!("<tr data-channel=\"{}\">", "ab".repeat(32))));
        assert!(html.contains("data-field=\"cumulative\" data-base=\"30\">30</td>"));
        assert!(html.contains("data-field=\"deposit\" data-base=\"1000000\">"));
        assert!(html.contains("withdrawing; claims stop 2026-12-07 03:09:51 UTC"));
        assert!(html.contains("<svg"), "charts are inline SVG");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("no settlement worker"));
        assert!(html.contains("<style nonce=\"n0nce\">"));
        assert!(html.contains(">no credits<"));
    }

    #[test]
    fn whole_tokens_when_the_decimals_are_known() {
        let mut d = sample();
        d.decimals = Some(6);
        let html = console_page(&d, "n");
        assert!(html.contains("data-field=\"deposit\" data-base=\"1000000\">1</td>"));
        assert!(html.contains("data-field=\"cumulative\" data-base=\"30\">0.00003</td>"));
        assert!(html.contains("amounts in whole tokens (6 decimals)"));
    }

    #[test]
    fn a_channel_whose_state_fails_shows_why_not_zeros() {
        let mut d = sample();
        d.channels[0].state_error = Some("<overloaded>".into());
        let html = console_page(&d, "n");
        assert!(html.contains("state unavailable: &lt;overloaded&gt;"));
        assert!(!html.contains("data-field=\"cumulative\" data-base"));
    }

    #[test]
    fn the_login_page_shows_a_form_and_nothing_else() {
        let html = login_page(Some("<b>wrong</b>"), "n");
        assert!(html.contains("action=\"/tally/console/login\""));
        assert!(html.contains("&lt;b&gt;wrong"));
        assert!(!html.contains("data-channel"));
    }

    #[test]
    fn many_channels_fold_into_other() {
        let mut d = sample();
        d.activity.series = (0..9)
            .map(|i| ActivitySeries {
                channel_id: format!("{i:064x}"),
                calls: vec![i, 0],
                revenue: vec![Amount(0), Amount(0)],
            })
            .collect();
        let t = layers(&d, false);
        assert_eq!(t.series.len(), MAX_LAYERS + 1);
        assert_eq!(t.series[0].values, vec![8.0, 0.0]);
        assert_eq!(t.series[MAX_LAYERS].label, "other");
        assert_eq!(t.series[MAX_LAYERS].values, vec![0.0 + 1.0 + 2.0, 0.0]);
    }
}
