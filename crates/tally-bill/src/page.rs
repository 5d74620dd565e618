//! The bill file: one HTML page with everything inline (spec/BILL.md §1). The verdict and
//! the charts are pre-rendered; the table and the proofs are data the bundled script reads:
//! a JSON block (the channel, the keys, the checkpoint note, the class names), the table's
//! columns (gzip, then base64) and the evidence (base64).
//!
//! The page's Content-Security-Policy allows no source at all but its own script, by hash,
//! so nothing in a bill can fetch, post or run anything else.

use std::io::Write;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tally_audit::AuditReport;
use tally_chart::escape;

use crate::read::Bill;
use crate::{summary, verdict, BillError};

/// The format of the page's data (spec/BILL.md §3).
pub const BILL_FORMAT: &str = "tally-bill/v1";

/// The page's script: `web/bill.js` and the pinned @noble libraries, bundled by
/// `tools/build-bill-page.sh` (the browser test checks it is fresh).
const SCRIPT: &str = include_str!("../assets/bill.js");
/// The page's style sheet.
const STYLE: &str = include_str!("../assets/bill.css");

/// What the page's script is told about the bill (spec/BILL.md §3).
#[derive(Serialize)]
struct Meta<'a> {
    format: &'static str,
    channel_id: String,
    client_key: String,
    provider_key: String,
    /// The signed note the proofs are against, and its size.
    checkpoint: Option<&'a str>,
    checkpoint_size: Option<u64>,
    records: usize,
    classes: &'a [String],
    evidence_count: usize,
    asset: String,
}

/// Writes the page of `bill`, audited into `report`.
pub fn write_page(
    bill: &Bill,
    report: &AuditReport,
    out: &mut impl Write,
) -> Result<(), BillError> {
    let h = &bill.header;
    let asset = bill
        .terms
        .as_ref()
        .map(|t| t.chain.asset.clone())
        .unwrap_or_default();
    let meta = Meta {
        format: BILL_FORMAT,
        channel_id: h.channel_id.to_hex(),
        client_key: h.client_key.to_hex(),
        provider_key: h.provider_key.to_hex(),
        checkpoint: bill.checkpoint.as_ref().map(|c| c.0.as_str()),
        checkpoint_size: bill.checkpoint.as_ref().map(|c| c.1),
        records: bill.rows.len(),
        classes: &bill.classes,
        evidence_count: bill.evidence_count,
        asset: asset.clone(),
    };
    let script = SCRIPT.replace("</script", "<\\/script");
    let script_hash = B64.encode(Sha256::digest(script.as_bytes()));
    let channel = escape(&meta.channel_id);
    write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"><title>tally bill · {short}</title><style>{STYLE}</style></head><body><header><h1>Bill for channel <code>{channel}</code></h1><p class="keys">client key <code>{client}</code> · provider key <code>{provider}</code>{asset_line}</p></header>"#,
        short = escape(&meta.channel_id[..meta.channel_id.len().min(10)]),
        client = escape(&meta.client_key),
        provider = escape(&meta.provider_key),
        asset_line = if asset.is_empty() {
            String::new()
        } else {
            format!(
                " · amounts in base units of <code>{}</code>",
                escape(&asset)
            )
        },
    )?;
    out.write_all(verdict::render(report, &asset, bill.client_key_pinned).as_bytes())?;
    let unit = if asset.is_empty() {
        "units"
    } else {
        "base units"
    };
    write!(
        out,
        r#"<section id="charts"><h2>Usage</h2>{}</section>"#,
        summary::charts(&bill.rows, &bill.classes, unit)
    )?;
    out.write_all(RECORDS_SECTION.as_bytes())?;
    let meta_json = serde_json::to_string(&meta)
        .map_err(std::io::Error::other)?
        .replace('<', "\\u003c");
    write!(
        out,
        r#"<script type="application/json" id="bill-meta">{meta_json}</script><script type="application/octet-stream" id="bill-rows">"#
    )?;
    out.write_all(B64.encode(gzip(&bill.rows.encode())?).as_bytes())?;
    out.write_all(br#"</script><script type="application/octet-stream" id="bill-evidence">"#)?;
    out.write_all(B64.encode(&bill.evidence).as_bytes())?;
    writeln!(out, "</script><script>{script}</script></body></html>")?;
    Ok(())
}

/// The records section the script fills: filters, the virtual table and the detail pane.
const RECORDS_SECTION: &str = r#"<section id="records"><h2>Records</h2><p class="hint">Pick a record to check its proof in this page: its signatures, and its inclusion in the newest checkpoint both parties signed.</p><form id="filters"><label>route <select id="f-class"><option value="">all</option></select></label> <label>outcome <select id="f-kind"><option value="">all</option><option value="0">charged</option><option value="1">uncharged</option><option value="2">credited</option></select></label> <label>lane <input id="f-lane" type="number" min="0" max="1023" placeholder="any"></label> <label>go to record <input id="f-goto" type="number" min="0" placeholder="index"></label> <span id="f-count"></span></form><div id="table" tabindex="0"><div id="table-head" class="row head"><span>index</span><span>time (UTC)</span><span>lane/seq</span><span>route</span><span>units</span><span>amount</span></div><div id="table-body"><div id="table-spacer"></div></div></div><div id="detail" data-verdict="none"><p>No record selected.</p></div><noscript><p>The table and the proofs need JavaScript; the verdict and charts above do not.</p></noscript></section>"#;

/// Gzip, for the table's columns (the page inflates them with the browser's
/// `DecompressionStream`).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::fast());
    enc.write_all(bytes)?;
    enc.finish()
}
