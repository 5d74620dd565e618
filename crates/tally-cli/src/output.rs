//! Output: human text on stdout, JSON with `--json`, progress bars on stderr (hidden when
//! stderr is not a terminal or JSON was asked for). Never prints key material.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How a command reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output {
    /// Machine-readable JSON on stdout instead of text.
    pub json: bool,
}

impl Output {
    /// Prints `value` as one JSON document if `--json`, else the text `human` renders.
    pub fn emit<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("tally: rendering JSON: {e}"),
            }
        } else {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    /// A line of progress for humans on stderr (nothing with `--json`).
    pub fn note(&self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    /// A progress bar of `len` steps on stderr.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    }
}

/// Units for humans: the counts up to the last meter that counted (`3`, `7+12`); the
/// outcome signs one count per meter (spec/PROTOCOL.md §5.2).
pub fn units_text(units: &tally_core::Units) -> String {
    let used = units.iter().rposition(|&u| u != 0).map_or(1, |i| i + 1);
    units[..used]
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_show_up_to_the_last_meter_that_counted() {
        assert_eq!(units_text(&[0, 0, 0, 0]), "0");
        assert_eq!(units_text(&[1, 0, 0, 0]), "1");
        assert_eq!(units_text(&[7, 12, 0, 0]), "7+12");
        assert_eq!(units_text(&[0, 0, 5, 0]), "0+0+5");
    }
}
