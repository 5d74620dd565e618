//! The HTML bill (spec/BILL.md) opened in a real browser: Debian's Chromium, headless,
//! driven by tools/browser/bill-check.mjs (puppeteer-core from tools/node_modules). Node and
//! Chromium are required: without them these tests fail, they never skip.
//!
//! Screenshots are kept in `$TMPDIR/tally-browser/` (printed by each test).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;

/// What the page showed, as bill-check.mjs reports it.
fn open_in_browser(bill: &Path, name: &str, records: &[u64], check_all: bool) -> serde_json::Value {
    let shots = std::env::temp_dir().join("tally-browser");
    std::fs::create_dir_all(&shots).unwrap_or_else(|e| panic!("{}: {e}", shots.display()));
    let shot = shots.join(format!("{name}.png"));
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/browser/bill-check.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(bill).arg(&shot);
    for r in records {
        cmd.arg("--record").arg(r.to_string());
    }
    if check_all {
        cmd.arg("--check-all");
    }
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("node is required for the browser tests: {e}"));
    assert!(
        o.status.success(),
        "bill-check.mjs failed\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&o),
        stderr(&o)
    );
    eprintln!("screenshot: {}", shot.display());
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bill-check.mjs printed no JSON ({e}): {}", stdout(&o)))
}

/// The mark the page gave the k-th record asked about, and its failed steps.
fn mark(page: &serde_json::Value, k: usize) -> (String, Vec<String>) {
    let r = &page["records_checked"][k];
    let failed = r["failedSteps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        r["verdict"].as_str().unwrap_or_default().to_string(),
        failed,
    )
}

/// The newest checkpoint's size in a statement (proofs are against it).
fn checkpoint_size(statement: &Path) -> u64 {
    let header: serde_json::Value =
        serde_json::from_str(read(statement).lines().next().unwrap_or_default())
            .unwrap_or_else(|e| panic!("statement header: {e}"));
    let note = header["checkpoints"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["note"].as_str())
        .unwrap_or_else(|| panic!("the demo statement has no checkpoint"));
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("note {note}"))
}

#[test]
fn the_demo_bill_verifies_every_record_in_the_browser() {
    let k = kept();
    let bill = k.dir.join("bill.html");
    let size = checkpoint_size(&k.dir.join("statement.jsonl"));
    let last_proved = size - 1;
    let page = open_in_browser(&bill, "demo-bill", &[0, last_proved], true);
    assert_eq!(page["ready"], "true", "{page}");
    assert_eq!(page["verdict"], "verified", "{page}");
    assert_eq!(page["records"].as_u64(), Some(kept_log_size()), "{page}");
    assert_eq!(page["discrepancies"].as_u64(), Some(0), "{page}");
    let n = kept_log_size();
    assert_eq!(page["shown"], format!("{n} of {n} records"), "{page}");
    assert!(page["charts"].as_u64() >= Some(5), "{page}");
    for r in 0..2 {
        assert_eq!(mark(&page, r), ("verified".into(), vec![]), "{page}");
        assert_eq!(
            page["records_checked"][r]["markColor"], "rgb(26, 127, 55)",
            "{page}"
        );
    }
    // Every record carries its proof in a bill this small, and each checks out in the page
    // (the ones past the checkpoint as signed but not yet checkpointed).
    assert_eq!(page["checkAll"]["checked"].as_u64(), Some(n), "{page}");
    assert_eq!(page["checkAll"]["failed"].as_u64(), Some(0), "{page}");
    // Records past the newest checkpoint are signed by both parties but not yet in a state
    // the client signed: counted apart, never as verified.
    assert_eq!(page["checkAll"]["verified"].as_u64(), Some(size), "{page}");
    assert_eq!(
        page["checkAll"]["unproved"].as_u64(),
        Some(n - size),
        "{page}"
    );
    assert_eq!(page["errors"], serde_json::json!([]), "{page}");
}

#[test]
fn a_tampered_statement_gives_a_failed_bill_with_its_record_marked_failed() {
    let k = kept();
    let d = tmp();
    let bad = d.path().join("bad.jsonl");
    // Lower record 4's charge by one: the outcome's amount (i128 LE) is at byte 376 of the
    // record (spec/PROTOCOL.md §5.2–5.3); record 4 is line 5.
    tamper(&k.dir.join("statement.jsonl"), &bad, 5, |v| {
        edit_record(v, |b| b[376] = b[376].wrapping_sub(1))
    });
    // And give record 3 a provider time no JavaScript Date can hold (2^63 ms): the page must
    // still load and show it (time_ms is the outcome's last 8 bytes, at 440..448).
    tamper(&bad, &bad, 4, |v| edit_record(v, |b| b[447] = 0x80));
    let html = d.path().join("bad.html");
    let o = run(&[
        "--json",
        "bill",
        "--statement",
        path(&bad),
        "--html",
        path(&html),
    ]);
    expect(&o, 1);
    assert!(
        json(&o)["discrepancies"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["index"] == 4)),
        "{}",
        stdout(&o)
    );
    let page = open_in_browser(&html, "tampered-bill", &[4, 2, 3], false);
    assert_eq!(page["ready"], "true", "{page}");
    assert_eq!(page["verdict"], "failed", "{page}");
    assert_eq!(mark(&page, 2).0, "failed", "{page}");
    assert!(
        page["discrepantRecords"]
            .as_array()
            .is_some_and(|a| a.contains(&4.into())),
        "{page}"
    );
    // Record 4 itself: its outcome no longer carries the provider's signature.
    let (verdict, failed) = mark(&page, 0);
    assert_eq!(verdict, "failed", "{page}");
    assert!(
        failed[0].contains("the provider signed the outcome"),
        "{page}"
    );
    assert_eq!(
        page["records_checked"][0]["markColor"], "rgb(207, 34, 46)",
        "{page}"
    );
    // Record 2 is signed, but the tampered leaf changed the statement's tree: its path no
    // longer reaches the root both parties signed, and only that step fails.
    let (verdict, failed) = mark(&page, 1);
    assert_eq!(verdict, "failed", "{page}");
    assert_eq!(failed.len(), 1, "{page}");
    assert!(failed[0].contains("checkpoint\u{2019}s tree"), "{page}");
}

/// The decoded evidence block of a bill page, and where it is in the file.
fn evidence_block(html: &str) -> (usize, usize, Vec<u8>) {
    let open = r#"id="bill-evidence">"#;
    let start = html
        .find(open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no evidence"));
    let end = start
        + html[start..]
            .find("</script>")
            .unwrap_or_else(|| panic!("unterminated"));
    let bytes = B64
        .decode(&html[start..end])
        .unwrap_or_else(|e| panic!("evidence: {e}"));
    (start, end, bytes)
}

#[test]
fn a_changed_byte_in_the_page_turns_its_record_red() {
    let k = kept();
    let d = tmp();
    let html = read(&k.dir.join("bill.html"));
    let (start, end, mut ev) = evidence_block(&html);
    // Walk the evidence as the page does (spec/BILL.md §4) to record 3's bytes, then change
    // the last byte of its lane field (authorization offset 33..37, after the 14-byte record
    // prefix and version).
    let count = kept_log_size() as usize;
    let mut at = 8 * count;
    for index in 0..count {
        let len = u32::from_le_bytes(ev[at..at + 4].try_into().unwrap_or_default()) as usize;
        if index == 3 {
            ev[at + 4 + 14 + 36] ^= 1;
            break;
        }
        let plen = ev[at + 4 + len + 64];
        at += 4 + len + 64 + 1 + if plen == 0xff { 0 } else { 32 * plen as usize };
    }
    let changed = format!("{}{}{}", &html[..start], B64.encode(&ev), &html[end..]);
    let out = d.path().join("changed.html");
    write(&out, &changed);
    let page = open_in_browser(&out, "changed-byte", &[3, 2], false);
    let (verdict, failed) = mark(&page, 0);
    assert_eq!(verdict, "failed", "{page}");
    assert!(failed[0].contains("the client signed it"), "{page}");
    assert_eq!(mark(&page, 1), ("verified".into(), vec![]), "{page}");
}

#[test]
fn every_byte_of_a_records_evidence_matters_to_the_page_check() {
    let k = kept();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/browser/verify-mutations.mjs");
    let o = Command::new("node")
        .arg(&script)
        .arg(k.dir.join("bill.html"))
        .arg("4")
        .output()
        .unwrap_or_else(|e| panic!("node is required for the browser tests: {e}"));
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify-mutations.mjs printed no JSON ({e}): {}", stdout(&o)));
    assert_eq!(v["ok"], true, "record 4 must verify before any change: {v}");
    let expected = 448
        + 64
        + 32 * v["proofHashes"].as_u64().unwrap_or(0)
        + v["noteLength"].as_u64().unwrap_or(0);
    assert!(v["proofHashes"].as_u64() > Some(0), "{v}");
    assert_eq!(v["mutations"].as_u64(), Some(expected), "{v}");
    assert_eq!(v["survived"], serde_json::json!([]), "{v}");
}

#[test]
fn a_statement_for_another_channel_fails_record_by_record_in_the_page() {
    let k = kept();
    let d = tmp();
    let bad = d.path().join("other.jsonl");
    // The provider titles the bill with another channel; the records and checkpoints are
    // the real channel's, signed by the real keys.
    tamper(&k.dir.join("statement.jsonl"), &bad, 0, |h| {
        h["channel_id"] = serde_json::Value::String("ab".repeat(32))
    });
    let html = d.path().join("other.html");
    let o = run(&[
        "--json",
        "bill",
        "--statement",
        path(&bad),
        "--html",
        path(&html),
    ]);
    expect(&o, 1);
    let page = open_in_browser(&html, "other-channel-bill", &[2], false);
    assert_eq!(page["verdict"], "failed", "{page}");
    let (verdict, failed) = mark(&page, 0);
    assert_eq!(verdict, "failed", "{page}");
    // The real checkpoints are for the real channel, so the bill has none for the channel it
    // names, and no record of it can be proved.
    assert!(
        failed[0].contains("no checkpoint of this channel"),
        "{page}"
    );
}

#[test]
fn a_bill_for_a_profile_refuses_a_statement_naming_another_client_key() {
    let k = kept();
    let d = tmp();
    let client = d.path().join("client");
    copy_dir(&k.dir.join("client"), &client);
    let bad = d.path().join("other-key.jsonl");
    // The provider's own key in the client's place.
    tamper(&k.dir.join("statement.jsonl"), &bad, 0, |h| {
        h["client_key"] = h["provider_key"].clone()
    });
    let html = d.path().join("bill.html");
    let o = run(&[
        "bill",
        "--statement",
        path(&bad),
        "--client",
        path(&client),
        "--html",
        path(&html),
    ]);
    expect(&o, 1);
    assert!(stderr(&o).contains("client key"), "{}", stderr(&o));
    assert!(!html.exists(), "no page for a statement of another client");
}
