//! `tally serve`'s logs: `--log-format json|text`, the `RUST_LOG` filter, and an `rpc_url`
//! whose path and query carry an API key never reaching stderr (issue 8, structured logs and
//! item 8). No chain is needed: the node at `rpc_url` is unreachable, so start-up logs the
//! redacted endpoint, then fails with exit 2.

mod common;

use std::path::Path;

use common::*;

/// A gateway config (the example's, without `[settlement]`) whose `rpc_url` points at a dead port with secrets.
fn config(dir: &Path) -> std::path::PathBuf {
    expect(&run(&["keygen", "--dir", path(dir), "--provider"]), 0);
    let example = read(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tally.example.toml"
    )));
    let port = free_port();
    let text = example.replace(
        "rpc_url = \"http://127.0.0.1:8545\"",
        &format!(
            "rpc_url = \"http://user:PASSWORD@127.0.0.1:{port}/v2/SECRETKEY?apikey=QUERYKEY\""
        ),
    );
    assert_ne!(text, example, "the example's rpc_url line changed");
    // No [settlement] (its payee key file is not here): the start-up fails at the chain.
    let text = match text.find("[settlement]") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let cfg = dir.join("gateway.toml");
    write(&cfg, &text);
    cfg
}

fn serve(cfg: &Path, format: Option<&str>, rust_log: Option<&str>) -> std::process::Output {
    let mut cmd = tally();
    cmd.args(["serve", "--config", path(cfg)]);
    if let Some(f) = format {
        cmd.args(["--log-format", f]);
    }
    match rust_log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("spawn serve: {e}"),
    }
}

fn no_secrets(o: &std::process::Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    for secret in ["PASSWORD", "SECRETKEY", "QUERYKEY", "v2"] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn json_logs_are_json_lines_with_the_rpc_url_redacted() {
    let dir = tmp();
    let cfg = config(dir.path());
    let o = serve(&cfg, Some("json"), None);
    expect(&o, 2);
    no_secrets(&o);
    let events: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let connecting = events
        .iter()
        .find(|e| e["fields"]["message"] == "connecting to the chain")
        .unwrap_or_else(|| panic!("no connecting event: {}", stderr(&o)));
    assert_eq!(connecting["level"], "INFO");
    let url = connecting["fields"]["rpc_url"].as_str().unwrap_or_default();
    assert!(url.starts_with("http://…@127.0.0.1:"), "{url}");
    assert!(url.ends_with("/…"), "{url}");
}

#[test]
fn text_is_the_default_and_rust_log_filters() {
    let dir = tmp();
    let cfg = config(dir.path());
    let o = serve(&cfg, None, None);
    expect(&o, 2);
    no_secrets(&o);
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("connecting to the chain"))
        .unwrap_or_else(|| panic!("no connecting line: {err}"));
    assert!(
        line.contains("INFO") && line.contains("rpc_url=http://…@127.0.0.1:"),
        "{line}"
    );
    assert!(!line.starts_with('{'), "{line}");

    // RUST_LOG=warn drops info events; the start-up error is still reported (redacted).
    let o = serve(&cfg, Some("text"), Some("warn"));
    expect(&o, 2);
    no_secrets(&o);
    assert!(
        !stderr(&o).contains("connecting to the chain"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("127.0.0.1"), "{}", stderr(&o));

    // An unknown format is a usage error.
    expect(&serve(&cfg, Some("xml"), None), 2);
}
