//! The provider console (spec/HTTP.md §11, issue 14): a real gateway with an admin token on
//! loopback, a paying client that made calls, a refusal and a dispute's credit; then the
//! console over HTTP (who gets in, what it shows, that it agrees with the gateway), and in a
//! real browser through tools/browser/console-check.mjs (Debian's Chromium via
//! puppeteer-core). Node, the pinned tools and Chromium are required: without them the
//! browser test fails, it never skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use tally_e2e::*;
use tally_server::console::auth::{session_value, COOKIE};
use tally_server::readauth::AdminToken;

const ADMIN: &str = "console-admin-token-0123456789abcdefghij";

/// What the test did to its one channel, as the gateway should report it.
struct Made {
    ch: TestChannel,
    /// Durable records (charged calls and the credit).
    size: u64,
    /// Charged calls.
    calls: u64,
    /// The cumulative: the charges' receipts minus the credit.
    cumulative: u128,
    /// The credit granted.
    credit: u128,
}

/// A stack with an admin token, and one channel with four charged calls, a checkpoint, one
/// more call and a granted dispute (as the x402 conformance test disputes a charged 5xx),
/// plus one unpaid request the gateway refuses.
async fn busy_stack(admin: bool) -> (Stack, Made, tally_client::Client, tempfile::TempDir) {
    let stack = Stack::start(|s| {
        // A charged 5xx is what a dispute refunds (spec/HTTP.md §7).
        s.charge_server_errors = true;
        if admin {
            s.admin_token = Some(AdminToken::new(ADMIN).unwrap());
        }
    })
    .await;
    let (ch, client, dir) = stack.client(1_000_000).await;
    let mut charged = Vec::new();
    for body in ["one", "two", "three"] {
        let r = client.post("/v1/echo").body(body).send().await.unwrap();
        assert_eq!(r.status, 200);
        charged.push(r.receipt.unwrap().outcome.amount);
    }
    let failed = client.post("/v1/fail").send().await.unwrap();
    assert_eq!(failed.status, 500);
    charged.push(failed.receipt.unwrap().outcome.amount);
    client.checkpoint().await.unwrap();
    let later = client.post("/v1/echo").body("later").send().await.unwrap();
    charged.push(later.receipt.unwrap().outcome.amount);
    let granted = client.dispute(3, failed.exchange).await.unwrap();
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/echo", stack.server.url()))
        .body("unpaid")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 402);
    let total: i128 = charged.iter().sum::<i128>() + granted.amount.0;
    let made = Made {
        ch,
        size: 6,
        calls: charged.len() as u64,
        cumulative: u128::try_from(total).unwrap(),
        credit: granted.amount.0.unsigned_abs(),
    };
    (stack, made, client, dir)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

async fn get(url: &str, cookie: Option<&str>) -> Answer {
    let mut req = http().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("{COOKIE}={c}"));
    }
    send(req).await
}

async fn login(base: &str, body: &str, content_type: &str) -> Answer {
    send(
        http()
            .post(format!("{base}/tally/console/login"))
            .header("content-type", content_type)
            .body(body.to_string()),
    )
    .await
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_hardened(what: &str, a: &Answer) {
    assert_eq!(header(a, "cache-control"), "no-store", "{what}");
    assert_eq!(header(a, "x-frame-options"), "DENY", "{what}");
    assert_eq!(header(a, "referrer-policy"), "no-referrer", "{what}");
    let csp = header(a, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!a.body.contains(ADMIN), "{what}: the token is never echoed");
}

/// The session value of a successful login's `Set-Cookie`.
fn session_of(a: &Answer) -> String {
    let set = header(a, "set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(ADMIN), "the cookie never carries the token");
    let v = set.strip_prefix(&format!("{COOKIE}=")).unwrap();
    v[..v.find(';').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lets_in_the_operator_only() {
    let (stack, made, _client, _dir) = busy_stack(true).await;
    let base = stack.server.url();
    let console = format!("{base}/tally/console");
    let id = made.ch.id.to_hex();

    let anon = get(&console, None).await;
    assert_eq!(anon.status, 401);
    assert!(anon.body.contains("action=\"/tally/console/login\""));
    assert!(!anon.body.contains(&id), "the login page shows no channel");
    assert_hardened("login page", &anon);
    assert_eq!(get(&format!("{console}/data.json"), None).await.status, 401);

    let wrong = login(&base, "token=not-the-token-0123456789abcdefghijkl", FORM).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    assert!(wrong.body.contains("That token was not accepted."));
    assert_eq!(
        login(
            &base,
            &format!("{{\"token\":\"{ADMIN}\"}}"),
            "application/json"
        )
        .await
        .status,
        415
    );
    let huge = format!("token={ADMIN}&pad={}", "x".repeat(5000));
    assert_eq!(login(&base, &huge, FORM).await.status, 413);

    let ok = login(&base, &format!("token={ADMIN}"), FORM).await;
    assert_eq!(ok.status, 303);
    assert_eq!(header(&ok, "location"), "/tally/console");
    assert_hardened("login", &ok);
    let session = session_of(&ok);

    let page = get(&console, Some(&session)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&format!("<tr data-channel=\"{id}\">")));
    assert!(page.body.contains(&format!(
        "data-field=\"cumulative\" data-base=\"{}\">",
        made.cumulative
    )));
    assert!(page.body.contains("<svg"));
    assert_hardened("console", &page);
    let bearer = send(http().get(&console).bearer_auth(ADMIN)).await;
    assert_eq!(bearer.status, 200);

    // A forged session (another expiry under the same tag) and an expired genuine one.
    let (_, tag) = session.split_once('.').unwrap();
    let forged = format!("{}.{tag}", now_ms() + 60_000);
    assert_eq!(get(&console, Some(&forged)).await.status, 401);
    let expired = session_value(&AdminToken::new(ADMIN).unwrap(), now_ms() - 1_000);
    assert_eq!(get(&console, Some(&expired)).await.status, 401);

    // Nothing under the console's prefix goes upstream (the cookie is scoped to it): a
    // mistyped path with the session, or with the admin bearer, is the gateway's own 404,
    // and a wrong method a hardened 405.
    for path in ["/", "/x", "/data.json/", "/login/extra"] {
        for with_bearer in [false, true] {
            let url = format!("{console}{path}");
            let mut req = http()
                .get(&url)
                .header("cookie", format!("{COOKIE}={session}"));
            if with_bearer {
                req = req.bearer_auth(ADMIN);
            }
            let a = send(req).await;
            assert_eq!(a.status, 404, "{path}: {}", a.body);
            let e: tally_http::ErrorBody = serde_json::from_str(&a.body).unwrap();
            assert_eq!(e.error.reason, tally_http::Reason::NotFound, "{path}");
            assert_hardened("unknown console path", &a);
        }
    }
    let wrong_method = get(&format!("{console}/logout"), Some(&session)).await;
    assert_eq!(wrong_method.status, 405);
    assert_hardened("405", &wrong_method);

    let out = send(http().post(format!("{console}/logout"))).await;
    assert_eq!(out.status, 303);
    assert!(header(&out, "set-cookie").contains("Max-Age=0"));
    stack.stop().await;
}

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_json_agrees_with_the_gateway() {
    let (stack, made, _client, _dir) = busy_stack(true).await;
    let url = format!("{}/tally/console/data.json", stack.server.url());
    let a = send(http().get(&url).bearer_auth(ADMIN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_hardened("data.json", &a);
    let d: Value = serde_json::from_str(&a.body).unwrap();
    let state = stack.gateway.channel_state(&made.ch.id).await.unwrap();
    assert_eq!(state.size, made.size);
    assert_eq!(state.cumulative.0, made.cumulative);

    let row = &d["channels"][0];
    assert_eq!(d["channels_in_log"], 1);
    assert_eq!(row["channel_id"], made.ch.id.to_hex());
    assert_eq!(row["size"], state.size);
    assert_eq!(row["cumulative"], state.cumulative.0.to_string());
    assert_eq!(row["checkpoint_size"], state.checkpoint_size);
    assert_eq!(row["checkpoint_size"], 4);
    assert_eq!(row["funding"]["deposit"], "1000000");
    assert_eq!(row["funding"]["withdraw"], "open");

    let calls: u64 = d["activity"]["series"][0]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(calls, made.calls);
    let credits = d["credits"].as_array().unwrap();
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0]["index"], 5);
    assert_eq!(credits[0]["amount"], made.credit.to_string());
    assert_eq!(d["totals"]["credited"], made.credit.to_string());
    let refusals = d["refusals"].as_array().unwrap();
    assert!(
        refusals
            .iter()
            .any(|r| r["reason"] == "payment_required" && r["count"].as_u64() >= Some(1)),
        "{refusals:?}"
    );
    assert_eq!(d["settlement"]["running"], false);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_there_is_no_console() {
    let (stack, _made, _client, _dir) = busy_stack(false).await;
    let base = stack.server.url();
    for path in ["/tally/console", "/tally/console/data.json"] {
        let a = send(http().get(format!("{base}{path}")).bearer_auth(ADMIN)).await;
        assert_eq!(a.status, 404, "{path}");
        // The gateway's own refusal: the proxy did not forward the path upstream.
        let e: tally_http::ErrorBody = serde_json::from_str(&a.body).unwrap();
        assert_eq!(e.error.reason, tally_http::Reason::NotFound, "{path}");
    }
    assert_eq!(
        login(&base, &format!("token={ADMIN}"), FORM).await.status,
        404
    );
    stack.stop().await;
}

/// Runs tools/browser/console-check.mjs against `console` and returns its JSON line.
fn browser_check(console: &str, shots: &std::path::Path) -> Value {
    tally_chain::anvil::ensure_tools().unwrap_or_else(|e| panic!("installing tools: {e}"));
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/browser/console-check.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(console)
        .arg(shots)
        .env("TALLY_ADMIN_TOKEN", ADMIN)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("node is required for the console browser test: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console-check.mjs failed (Chromium is required: apt-get install chromium): {stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout} {stderr}"))
}

/// The value of a `<title>` like `ab…· 2026-12-07 03:00:00 UTC: 5 calls`.
fn bar_value(title: &str) -> u64 {
    let v = title.rsplit(": ").next().unwrap();
    v.trim_end_matches(" calls").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_the_login_then_the_channel() {
    let (stack, made, _client, _dir) = busy_stack(true).await;
    let console = format!("{}/tally/console", stack.server.url());
    let shots = tmp().keep();
    let seen = tokio::task::spawn_blocking({
        let (console, shots) = (console.clone(), shots.clone());
        move || browser_check(&console, &shots)
    })
    .await
    .unwrap();
    println!("console screenshots: {}", shots.display());
    println!("{seen}");
    let id = made.ch.id.to_hex();

    let login = &seen["login"];
    assert_eq!(login["status"], 401);
    assert_eq!(login["hasForm"], true);
    assert_eq!(login["channelRows"], 0);
    assert!(!login["text"].as_str().unwrap().contains(&id));

    let c = &seen["console"];
    assert_eq!(c["status"], 200);
    assert_eq!(c["url"], console);
    let ch = &c["channels"][0];
    assert_eq!(ch["id"], id);
    assert_eq!(ch["size"], made.size);
    assert_eq!(ch["cumulative"], made.cumulative.to_string());
    assert_eq!(ch["deposit"], "1000000");
    let calls: u64 = c["callBars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| bar_value(t.as_str().unwrap()))
        .sum();
    assert_eq!(calls, made.calls, "{:?}", c["callBars"]);
    assert!(c["charts"].as_u64().unwrap() >= 3);
    assert!(c["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t.as_str().unwrap().starts_with("payment_required: ")));
    assert_eq!(c["credits"], 1);
    assert_eq!(c["styled"], true, "the nonce'd style applies under the CSP");
    assert_eq!(seen["cspViolations"], Value::Array(vec![]));
    for f in ["login.png", "console.png"] {
        assert!(shots.join(f).metadata().unwrap().len() > 1000, "{f}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_capped() {
    let stack = Stack::start(|s| s.admin_token = Some(AdminToken::new(ADMIN).unwrap())).await;
    let base = stack.server.url();
    for i in 0..tally_server::console::auth::MAX_FAILURES {
        let a = login(&base, &format!("token=guess-{i}"), FORM).await;
        assert_eq!(a.status, 401, "guess {i}");
    }
    // Past the cap wrong guesses get 429 until the minute ends, but a stranger spending the
    // budget does not lock the operator out: the right token still signs in.
    let capped = login(&base, "token=one-more-guess", FORM).await;
    assert_eq!(capped.status, 429);
    assert!(capped.headers.get("set-cookie").is_none());
    let right = login(&base, &format!("token={ADMIN}"), FORM).await;
    assert_eq!(right.status, 303);
    assert!(right.headers.get("set-cookie").is_some());
    let console = format!("{base}/tally/console");
    assert_eq!(
        send(http().get(&console).bearer_auth(ADMIN)).await.status,
        200
    );
    stack.stop().await;
}
