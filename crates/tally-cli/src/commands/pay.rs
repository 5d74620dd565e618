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
    let resp = req.send().await?;
    // The receipt is verified; wait until its mirror append is durable before exiting.
    client.flush().await?;
    if let Some(r) = &resp.receipt {
        profile.keep_exchange(r.outcome.index, &resp.exchange)?;
    }
    let receipt = resp.receipt.as_ref().map(|r| {
        json!({"index": r.outcome.index, "lane": r.outcome.lane, "seq": r.outcome.seq,
               "units": r.outcome.units,
               "amount": r.outcome.amount.to_string(), "cumulative": r.outcome.cumulative.to_string()})
    });
    if out.json {
        out.emit(
            &json!({"status": resp.status.as_u16(), "body": String::from_utf8_lossy(&resp.body),
                    "receipt": receipt}),
            String::new,
        );
    } else {
        std::io::stdout()
            .write_all(&resp.body)
            .map_err(|e| CliError::Service(e.to_string()))?;
        println!();
        match &resp.receipt {
            Some(r) => eprintln!(
                "tally: {} — record {} charged {} ({} units), cumulative {}",
                resp.status,
                r.outcome.index,
                r.outcome.amount,
                crate::output::units_text(&r.outcome.units),
                r.outcome.cumulative
            ),
            None => eprintln!("tally: {} — free route, no receipt", resp.status),
        }
    }
    Ok(())
}
