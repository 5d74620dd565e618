//! `tally pay`: one paid request with a client profile.

use std::io::Write;

use http::{HeaderName, HeaderValue, Method};
use serde_json::json;

use crate::cli::PayArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;

/// Sends the request; prints the body (or JSON with the receipt).
pub async fn run(a: PayArgs, out: Output) -> Result<()> {
    let profile = Profile::load(&a.profile.client)?;
    let method = Method::from_bytes(a.method.to_uppercase().as_bytes())
        .map_err(|e| CliError::Usage(format!("method {:?}: {e}", a.method)))?;
    let client = profile.connect_accepting(a.accept_terms).await?;
    let mut req = client.request(method, &a.url);
    for h in &a.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| CliError::Usage(format!("header {h:?} is not `Name: value`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|e| CliError::Usage(format!("header {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|e| CliError::Usage(format!("header value {value:?}: {e}")))?;
        req = req.header(name, value);
    }
    if let Some(d) = &a.data {
        req = req.body(d.clone().into_bytes());
    }
    if let Some(m) = a.max_amount {
        req = req.max_amount(m);
    }
    // Streamed: the body is printed as it arrives (a completion token by token) and the
    // receipt checked at its end (spec/HTTP.md §5.7); any other answer comes in one chunk.
    let mut stream = req.send_streaming().await?;
    let status = stream.status();
    let mut body = Vec::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.chunk().await? {
        if !out.json {
            stdout
                .write_all(&chunk)
                .and_then(|()| stdout.flush())
                .map_err(|e| CliError::Service(e.to_string()))?;
        }
        body.extend_from_slice(&chunk);
    }
    let paid = stream.finish().await?;
    // The receipt is verified; wait until its mirror append is durable before exiting.
    client.flush().await?;
    if let Some(r) = &paid.receipt {
        profile.keep_exchange(r.outcome.index, &paid.exchange)?;
    }
    let receipt = paid.receipt.as_ref().map(|r| {
        json!({"index": r.outcome.index, "lane": r.outcome.lane, "seq": r.outcome.seq,
               "units": r.outcome.units, "broken": paid.broken,
               "amount": r.outcome.amount.to_string(), "cumulative": r.outcome.cumulative.to_string()})
    });
    if out.json {
        out.emit(
            &json!({"status": status.as_u16(), "body": String::from_utf8_lossy(&body),
                    "receipt": receipt}),
            String::new,
        );
        return Ok(());
    }
    println!();
    match &paid.receipt {
        Some(r) => eprintln!(
            "tally: {} — record {} charged {} ({} units{}), cumulative {}",
            status,
            r.outcome.index,
            r.outcome.amount,
            crate::output::units_text(&r.outcome.units),
            if paid.broken {
                ", the upstream broke the stream"
            } else {
                ""
            },
            r.outcome.cumulative
        ),
        None => eprintln!("tally: {status} — free route, no receipt"),
    }
    Ok(())
}
