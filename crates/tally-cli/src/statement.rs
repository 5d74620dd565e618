//! Statements: the file format and its reader and writer are tally-audit's
//! ([`tally_audit::statement`], `tally-statement/v2`); this module only fetches a statement
//! from a provider's endpoints, since the audit crate never touches the network.

use tally_core::{ChannelId, PublicKey, SecretKey};
use tally_http::api::{Checkpoints, RecordsPage};
use tally_http::read_auth::{ReadToken, READ_AUTH};
use tally_http::WireRecord;

pub use tally_audit::statement::{
    Statement, StatementHeader, StatementReader, StatementWriter, STATEMENT_FORMAT,
};

use crate::error::{CliError, Result};

/// GETs `url`; with `reader`, signs a read token for it (spec/HTTP.md §5.1): the channel
/// endpoints answer only the channel's session key.
async fn get(
    http: &reqwest::Client,
    url: &str,
    reader: Option<(&SecretKey, &ChannelId)>,
) -> Result<Vec<u8>> {
    let mut req = http.get(url);
    if let Some((key, channel)) = reader {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| CliError::Service(format!("GET {url}: {e}")))?;
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        req = req.header(
            READ_AUTH,
            ReadToken::sign(key, channel, "GET", &target, now).to_header(),
        );
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CliError::Service(format!("GET {url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| CliError::Service(format!("GET {url}: {e}")))?;
    if !status.is_success() {
        return Err(CliError::Service(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    Ok(body.to_vec())
}

fn json<T: serde::de::DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| CliError::Service(format!("{url}: {e}")))
}

/// Fetches channel `channel`'s whole statement from a provider's endpoints (terms, records
/// pages, checkpoints). `session` is the session key the client bound: it signs the read
/// tokens, and its public half is the statement's client key.
pub async fn fetch(base: &str, channel: &ChannelId, session: &SecretKey) -> Result<Statement> {
    let client_key: PublicKey = session.public();
    let reader = Some((session, channel));
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::new();
    let terms_url = format!("{base}{}", tally_http::headers::WELL_KNOWN_PATH);
    let terms_bytes = get(&http, &terms_url, None).await?;
    let terms = tally_http::Terms::parse(&terms_bytes)
        .map_err(|e| CliError::Service(format!("{terms_url}: {e}")))?;
    let ch = format!(
        "{base}{}/channels/{}",
        tally_http::headers::API_PREFIX,
        channel.to_hex()
    );
    let mut records: Vec<WireRecord> = Vec::new();
    loop {
        let url = format!("{ch}/records?from={}", records.len());
        let page: RecordsPage = json(&url, &get(&http, &url, reader).await?)?;
        let done = page.records.is_empty();
        records.extend(page.records);
        if done || records.len() as u64 >= page.size {
            break;
        }
    }
    let url = format!("{ch}/checkpoints");
    let cps: Checkpoints = json(&url, &get(&http, &url, reader).await?)?;
    let header = StatementHeader {
        format: STATEMENT_FORMAT.into(),
        channel_id: *channel,
        client_key,
        provider_key: terms.provider_key,
        terms: Some(
            String::from_utf8(terms_bytes)
                .map_err(|e| CliError::Service(format!("{terms_url}: {e}")))?,
        ),
        checkpoints: cps.checkpoints,
    };
    Ok(Statement::from_records(header, &records)?)
}
