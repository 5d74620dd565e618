//! The demo's streamed completions (DESIGN.md §9): a few OpenAI-style completions from the
//! built-in mock ([`crate::mock_llm`]), paid per input and output token, each forwarded by the
//! gateway token by token and paid by the receipt that follows its last token.

use std::io::Write;
use std::time::Instant;

use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;
use crate::upstream::{INPUT_TOKEN_PRICE, OUTPUT_TOKEN_PRICE};

/// The prompts, and how many tokens each completion streams.
const PROMPTS: [(&str, u64); 3] = [
    ("why should a bill be provable", 12),
    ("explain co-signed usage records", 16),
    ("summarize the channel", 8),
];

/// What the streamed completions paid.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Streamed {
    /// Completions streamed and paid.
    pub completions: u64,
    /// Prompt tokens charged, from the usage events.
    pub input_tokens: u64,
    /// Completion tokens charged.
    pub output_tokens: u64,
    /// What they charged together.
    pub charged: String,
    /// The slowest time from sending a completion to its first token arriving, ms.
    pub first_token_ms: f64,
}

/// Streams and pays [`PROMPTS`], printing the first completion as it arrives (text output
/// only); every receipt is checked against exactly the bytes received and the usage they
/// reported, then kept for disputes.
pub async fn stream_completions(
    client: &tally_client::Client,
    profile: &Profile,
    out: &Output,
) -> Result<Streamed> {
    let mut s = Streamed::default();
    let mut charged = 0u128;
    for (i, (prompt, tokens)) in PROMPTS.into_iter().enumerate() {
        let body = serde_json::json!({
            "model": "tally-mock",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let sent = Instant::now();
        let mut stream = client
            .post(crate::mock_llm::PATH)
            .body(body.to_string().into_bytes())
            .send_streaming()
            .await?;
        let show = i == 0 && !out.json;
        if show {
            eprint!("      > ");
        }
        let mut first = None;
        // Chunks cut events anywhere: whole lines are shown, the rest waits for the next.
        let mut pending = String::new();
        while let Some(chunk) = stream.chunk().await? {
            first.get_or_insert(sent.elapsed());
            if show {
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    eprint!("{}", delta_text(&line));
                }
                let _ = std::io::stderr().flush();
            }
        }
        if show {
            eprintln!();
        }
        let paid = stream.finish().await?;
        let receipt = paid.receipt.ok_or_else(|| {
            CliError::Verification("a streamed completion came back without a receipt".into())
        })?;
        let o = receipt.outcome;
        let expected = u128::from(o.units[0]) * INPUT_TOKEN_PRICE
            + u128::from(o.units[1]) * OUTPUT_TOKEN_PRICE;
        if o.units[1] != tokens || o.amount.unsigned_abs() != expected {
            return Err(CliError::Verification(format!(
                "completion {i}: charged {} for units {:?}",
                o.amount, o.units
            )));
        }
        profile.keep_exchange(o.index, &paid.exchange)?;
        s.completions += 1;
        s.input_tokens += o.units[0];
        s.output_tokens += o.units[1];
        charged += expected;
        let ms = first.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        s.first_token_ms = s.first_token_ms.max(ms);
    }
    s.charged = charged.to_string();
    Ok(s)
}

/// The text of the `delta.content`s in whole lines of server-sent events (for display).
fn delta_text(lines: &str) -> String {
    lines
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_text_reads_the_tokens_of_a_chunk() {
        let chunk = crate::mock_llm::events(2, 3).concat();
        let text = delta_text(&chunk);
        assert_eq!(text.split_whitespace().count(), 3, "{text}");
    }
}
