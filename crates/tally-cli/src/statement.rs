//! The statement file: a provider's bill for one channel, as JSON Lines. The first line is a
//! [`StatementHeader`] (channel, both public keys, the exact terms document, every cosigned
//! checkpoint); each following line is one record with its provider signature, in the wire
//! form of the records endpoint (spec/HTTP.md §5.1), record 0 first.

use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, PublicKey, SecretKey};
use tally_http::api::{Checkpoints, RecordsPage};
use tally_http::read_auth::{ReadToken, READ_AUTH};
use tally_http::{WireCheckpoint, WireRecord};

use crate::error::{CliError, Result};

/// The `format` of a statement header.
pub const STATEMENT_FORMAT: &str = "tally-statement/v1";

/// The first line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementHeader {
    /// Always [`STATEMENT_FORMAT`].
    pub format: String,
    /// The channel billed.
    pub channel_id: ChannelId,
    /// The client's session key.
    pub client_key: PublicKey,
    /// The provider's key.
    pub provider_key: PublicKey,
    /// The exact bytes of the terms document served at `/.well-known/tally`, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<String>,
    /// Every cosigned checkpoint, oldest first.
    #[serde(default)]
    pub checkpoints: Vec<WireCheckpoint>,
}

/// A statement in memory: the header and the record lines, unparsed (the audit parses them
/// in parallel).
pub struct Statement {
    /// The header.
    pub header: StatementHeader,
    /// One JSON record per line.
    pub body: Vec<u8>,
}

impl Statement {
    /// Reads a statement file.
    pub fn read(path: &Path) -> Result<Statement> {
        let bytes = std::fs::read(path).map_err(|e| CliError::io(path, e))?;
        Self::parse(bytes).map_err(|e| match e {
            CliError::Usage(m) => CliError::Usage(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses the bytes of a statement file.
    pub fn parse(mut bytes: Vec<u8>) -> Result<Statement> {
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        let header: StatementHeader = serde_json::from_slice(&bytes[..end])
            .map_err(|e| CliError::Usage(format!("not a statement (header line: {e})")))?;
        if header.format != STATEMENT_FORMAT {
            return Err(CliError::Usage(format!(
                "statement format {:?} is not {STATEMENT_FORMAT:?}",
                header.format
            )));
        }
        let body = bytes.split_off((end + 1).min(bytes.len()));
        Ok(Statement { header, body })
    }

    /// The record lines (empty lines skipped).
    pub fn lines(&self) -> Vec<&[u8]> {
        self.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect()
    }

    /// Builds a statement from records in memory.
    pub fn from_records(header: StatementHeader, records: &[WireRecord]) -> Result<Statement> {
        let mut body = Vec::with_capacity(records.len() * 1100);
        for r in records {
            serde_json::to_writer(&mut body, r).map_err(|e| CliError::Usage(e.to_string()))?;
            body.push(b'\n');
        }
        Ok(Statement { header, body })
    }

    /// Writes the statement to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let f = std::fs::File::create(path).map_err(|e| CliError::io(path, e))?;
        let mut w = BufWriter::new(f);
        let io = |e| CliError::io(path, e);
        serde_json::to_writer(&mut w, &self.header).map_err(|e| CliError::Usage(e.to_string()))?;
        w.write_all(b"\n").map_err(io)?;
        w.write_all(&self.body).map_err(io)?;
        w.flush().map_err(io)
    }
}

/// Streams a statement to a file record by record (for large exports).
pub struct StatementWriter {
    w: BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl StatementWriter {
    /// Creates `path` and writes the header line.
    pub fn create(path: &Path, header: &StatementHeader) -> Result<Self> {
        let f = std::fs::File::create(path).map_err(|e| CliError::io(path, e))?;
        let mut w = BufWriter::new(f);
        serde_json::to_writer(&mut w, header).map_err(|e| CliError::Usage(e.to_string()))?;
        w.write_all(b"\n").map_err(|e| CliError::io(path, e))?;
        Ok(StatementWriter {
            w,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record line.
    pub fn push(&mut self, record: &WireRecord) -> Result<()> {
        serde_json::to_writer(&mut self.w, record).map_err(|e| CliError::Usage(e.to_string()))?;
        self.w
            .write_all(b"\n")
            .map_err(|e| CliError::io(&self.path, e))
    }

    /// Flushes.
    pub fn finish(mut self) -> Result<()> {
        self.w.flush().map_err(|e| CliError::io(&self.path, e))
    }
}

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
    Statement::from_records(header, &records)
}
