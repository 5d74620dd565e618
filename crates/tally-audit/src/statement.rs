//! The statement file: a provider's bill for one channel, as JSON Lines (spec/HTTP.md §5.5).
//! The first line is a [`StatementHeader`] (channel, both public keys, the exact terms
//! document, every cosigned checkpoint); each following line is one record with its provider
//! signature in the wire form of the records endpoint
//! (spec/HTTP.md §5.1), record 0 first, in log order (index order, spec/PROTOCOL.md §5.5).
//!
//! Reading is streamed: [`StatementReader`] hands out the body a chunk of lines at a time and
//! never holds more than one line beyond [`MAX_RECORD_LINE`] bytes, so a statement of any
//! length is read in bounded memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, PublicKey};
use tally_http::{WireCheckpoint, WireRecord};
use thiserror::Error;

/// The `format` of a statement header. Version 2 carries protocol-v2 records (lanes,
/// provider-assigned indexes, acknowledged states; spec/PROTOCOL.md §5.3).
pub const STATEMENT_FORMAT: &str = "tally-statement/v2";

/// The longest record line read: a record line is about 1 KB, so anything longer is not one,
/// and is reported instead of being buffered.
pub const MAX_RECORD_LINE: usize = 16 * 1024;

/// The longest header line read. The header grows with the number of checkpoints (about
/// 700 bytes each), so this admits some 90,000 of them.
pub const MAX_HEADER_LINE: usize = 64 << 20;

/// Why a statement cannot be read at all (a bad record line is a discrepancy, not this).
#[derive(Debug, Error)]
pub enum StatementError {
    /// Reading or writing the file failed.
    #[error("{what}: {source}")]
    Io {
        /// The file or stream.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The first line is not a statement header.
    #[error("not a statement (header line: {0})")]
    Header(String),
    /// The header names another format.
    #[error("statement format {found:?} is not {STATEMENT_FORMAT:?}")]
    Format {
        /// The format found.
        found: String,
    },
    /// A line could not be rendered as JSON.
    #[error("rendering a statement line: {0}")]
    Render(String),
    /// The audit's worker threads stopped before the end of the statement.
    #[error("the audit's worker threads stopped early")]
    Workers,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> StatementError + '_ {
    move |source| StatementError::Io {
        what: what.to_string(),
        source,
    }
}

/// The first line of a statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl StatementHeader {
    /// Parses and checks a header line.
    pub fn parse(line: &[u8]) -> Result<Self, StatementError> {
        let header: StatementHeader =
            serde_json::from_slice(line).map_err(|e| StatementError::Header(e.to_string()))?;
        if header.format != STATEMENT_FORMAT {
            return Err(StatementError::Format {
                found: header.format,
            });
        }
        Ok(header)
    }
}

/// One body line as read.
#[derive(Clone, Debug)]
pub(crate) enum Line {
    /// The line's bytes, a range of the chunk's buffer.
    Bytes(Range<usize>),
    /// A line longer than [`MAX_RECORD_LINE`], of this many bytes, not kept.
    TooLong(u64),
}

/// Consecutive record lines: `lines[k]` is record `first + k`.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    /// Position of the chunk in the stream (0, 1, …).
    pub number: u64,
    /// Index of its first record.
    pub first: u64,
    /// The lines' bytes.
    pub buf: Vec<u8>,
    /// The lines.
    pub lines: Vec<Line>,
}

impl Chunk {
    /// The bytes of line `k`, or its length if it was too long to keep.
    pub fn line(&self, k: usize) -> Result<&[u8], u64> {
        match &self.lines[k] {
            Line::Bytes(r) => Ok(&self.buf[r.clone()]),
            Line::TooLong(n) => Err(*n),
        }
    }
}

/// What one bounded line read found.
enum Read {
    Eof,
    Line,
    TooLong(u64),
}

/// Appends the next line (without its newline) to `out`, keeping at most `limit` bytes of it:
/// a longer line is consumed and reported by length, never buffered.
fn read_line<R: BufRead>(r: &mut R, out: &mut Vec<u8>, limit: usize) -> std::io::Result<Read> {
    let start = out.len();
    let mut total = 0u64;
    let mut any = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (take, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(p) => (p, p + 1, true),
            None => (buf.len(), buf.len(), false),
        };
        total += take as u64;
        if total <= limit as u64 {
            out.extend_from_slice(&buf[..take]);
        } else {
            out.truncate(start);
        }
        r.consume(used);
        if done {
            break;
        }
    }
    Ok(match (any, total > limit as u64) {
        (false, _) => Read::Eof,
        (true, true) => Read::TooLong(total),
        (true, false) => Read::Line,
    })
}

/// A statement being read: the header, parsed, and the body still in the stream.
pub struct StatementReader<R> {
    header: StatementHeader,
    reader: R,
    what: String,
    next_index: u64,
    next_chunk: u64,
}

impl StatementReader<BufReader<File>> {
    /// Opens a statement file and reads its header.
    pub fn open(path: &Path) -> Result<Self, StatementError> {
        let what = path.display().to_string();
        let file = File::open(path).map_err(io(&what))?;
        Self::new(BufReader::with_capacity(1 << 20, file), &what)
    }
}

impl<R: BufRead> StatementReader<R> {
    /// Reads the header line from `reader`; `what` names the source in errors.
    pub fn new(mut reader: R, what: &str) -> Result<Self, StatementError> {
        let mut line = Vec::new();
        match read_line(&mut reader, &mut line, MAX_HEADER_LINE).map_err(io(what))? {
            Read::Eof => return Err(StatementError::Header("empty statement".into())),
            Read::TooLong(n) => {
                return Err(StatementError::Header(format!(
                    "{n} bytes, beyond the {MAX_HEADER_LINE}-byte limit"
                )))
            }
            Read::Line => {}
        }
        Ok(Self::with_header(
            StatementHeader::parse(&line)?,
            reader,
            what,
        ))
    }

    /// A reader over a body whose header is already parsed.
    pub fn with_header(header: StatementHeader, reader: R, what: &str) -> Self {
        StatementReader {
            header,
            reader,
            what: what.to_string(),
            next_index: 0,
            next_chunk: 0,
        }
    }

    /// The header.
    pub fn header(&self) -> &StatementHeader {
        &self.header
    }

    /// Calls `visit(index, line)` for every record line in order, in bounded memory (one
    /// chunk at a time). `line` is the line's bytes, or its length when it exceeds
    /// [`MAX_RECORD_LINE`]. For readers other than the audit (the HTML bill) that need every
    /// line but not the audit's verdict.
    pub fn for_each_line(
        mut self,
        mut visit: impl FnMut(u64, Result<&[u8], u64>),
    ) -> Result<(), StatementError> {
        let mut buf = Vec::new();
        loop {
            let chunk = self.read_chunk(crate::CHUNK, buf)?;
            for k in 0..chunk.lines.len() {
                visit(chunk.first + k as u64, chunk.line(k));
            }
            if chunk.lines.len() < crate::CHUNK {
                return Ok(());
            }
            buf = chunk.buf;
        }
    }

    /// Reads up to `max` record lines (blank lines are skipped) into `buf`, a spare buffer
    /// (reused so the stream does not fault in fresh pages for every chunk). Fewer than `max`
    /// lines means the body has ended.
    pub(crate) fn read_chunk(
        &mut self,
        max: usize,
        mut buf: Vec<u8>,
    ) -> Result<Chunk, StatementError> {
        buf.clear();
        let mut chunk = Chunk {
            number: self.next_chunk,
            first: self.next_index,
            buf,
            lines: Vec::with_capacity(max),
        };
        while chunk.lines.len() < max {
            let start = chunk.buf.len();
            let line = match read_line(&mut self.reader, &mut chunk.buf, MAX_RECORD_LINE)
                .map_err(io(&self.what))?
            {
                Read::Eof => break,
                Read::TooLong(n) => Line::TooLong(n),
                Read::Line if chunk.buf[start..].iter().all(u8::is_ascii_whitespace) => {
                    chunk.buf.truncate(start);
                    continue;
                }
                Read::Line => Line::Bytes(start..chunk.buf.len()),
            };
            chunk.lines.push(line);
        }
        self.next_index += chunk.lines.len() as u64;
        self.next_chunk += 1;
        Ok(chunk)
    }
}

/// A statement in memory: the header and the record lines, unparsed. For statements fetched
/// from a provider's endpoints and for tests; files are read with [`StatementReader`].
#[derive(Clone, Debug)]
pub struct Statement {
    /// The header.
    pub header: StatementHeader,
    /// One JSON record per line.
    pub body: Vec<u8>,
}

impl Statement {
    /// Builds a statement from records in memory.
    pub fn from_records(
        header: StatementHeader,
        records: &[WireRecord],
    ) -> Result<Statement, StatementError> {
        let mut w = StatementWriter::body(Vec::with_capacity(records.len() * 1100));
        for r in records {
            w.push(r)?;
        }
        Ok(Statement {
            header,
            body: w.finish()?,
        })
    }

    /// Parses the bytes of a whole statement file.
    pub fn parse(bytes: &[u8]) -> Result<Statement, StatementError> {
        let mut r = StatementReader::new(bytes, "statement")?;
        let header = r.header.clone();
        let mut body = Vec::new();
        std::io::copy(&mut r.reader, &mut body).map_err(io("statement"))?;
        Ok(Statement { header, body })
    }

    /// A streaming reader over this statement (what the audit takes).
    pub fn reader(&self) -> StatementReader<&[u8]> {
        StatementReader::with_header(self.header.clone(), &self.body, "statement")
    }

    /// The number of non-blank body lines.
    pub fn count_lines(&self) -> u64 {
        self.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .count() as u64
    }

    /// Writes the statement to `path`.
    pub fn write(&self, path: &Path) -> Result<(), StatementError> {
        let mut w = StatementWriter::create(path, &self.header)?;
        w.out.write_all(&self.body).map_err(io(&w.what))?;
        w.finish().map(drop)
    }
}

/// Writes a statement record by record, so exports and generators never hold a whole log.
pub struct StatementWriter<W: Write> {
    out: W,
    what: String,
}

impl StatementWriter<BufWriter<File>> {
    /// Creates `path` and writes the header line.
    pub fn create(path: &Path, header: &StatementHeader) -> Result<Self, StatementError> {
        let what = path.display().to_string();
        let file = File::create(path).map_err(io(&what))?;
        Self::new(BufWriter::with_capacity(1 << 20, file), header, &what)
    }
}

impl<W: Write> StatementWriter<W> {
    /// Writes the header line to `out`; `what` names it in errors.
    pub fn new(mut out: W, header: &StatementHeader, what: &str) -> Result<Self, StatementError> {
        serde_json::to_writer(&mut out, header)
            .map_err(|e| StatementError::Render(e.to_string()))?;
        out.write_all(b"\n").map_err(io(what))?;
        Ok(StatementWriter {
            out,
            what: what.to_string(),
        })
    }

    /// A writer of body lines only (no header).
    pub fn body(out: W) -> Self {
        StatementWriter {
            out,
            what: "statement body".into(),
        }
    }

    /// Appends one record line.
    pub fn push(&mut self, record: &WireRecord) -> Result<(), StatementError> {
        serde_json::to_writer(&mut self.out, record)
            .map_err(|e| StatementError::Render(e.to_string()))?;
        self.out.write_all(b"\n").map_err(io(&self.what))
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, StatementError> {
        self.out.flush().map_err(io(&self.what))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_measured_not_kept() {
        let mut text = vec![b'a'; 40];
        text.push(b'\n');
        text.extend_from_slice(b"ok\n\nlast");
        let mut r = &text[..];
        let mut out = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut out, 10),
            Ok(Read::TooLong(40))
        ));
        assert!(out.is_empty());
        assert!(matches!(read_line(&mut r, &mut out, 10), Ok(Read::Line)));
        assert_eq!(out, b"ok");
        out.clear();
        assert!(matches!(read_line(&mut r, &mut out, 10), Ok(Read::Line)));
        assert!(out.is_empty());
        assert!(matches!(read_line(&mut r, &mut out, 10), Ok(Read::Line)));
        assert_eq!(out, b"last");
        assert!(matches!(read_line(&mut r, &mut out, 10), Ok(Read::Eof)));
    }
}
