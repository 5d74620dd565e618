//! `tally serve --config FILE`: the gateway until Ctrl-C. This is tally-server's standalone
//! gateway (`tally_server::standalone::run`, the same code as the `tally-gateway` binary):
//! it loads the config, refuses a key file others can read (and a `[settlement]` payee key
//! that is not `chain.pay_to`), connects to the chain, logs whether it claims by itself
//! (`[settlement]`) or claims are manual, and one "listening on" line to stderr once it is
//! bound. Every start-up failure is exit 2.
//!
//! Logging: the process-wide `tracing` subscriber is installed here, for `serve` only (the
//! other commands print their own output), in `--log-format` (`text` or `json`) with the
//! `RUST_LOG` filter (default `info`).

use tally_server::standalone::{init_logging, LogFormat};

use crate::cli::{LogFormatArg, ServeArgs};
use crate::error::Result;
use crate::output::Output;

/// Serves until interrupted.
pub async fn run(a: ServeArgs, _out: Output) -> Result<()> {
    init_logging(match a.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    })?;
    Ok(tally_server::standalone::run(&a.config).await?)
}
