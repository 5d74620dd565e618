//! `tally serve --config FILE`: the gateway until Ctrl-C. This is tally-server's standalone
//! gateway (`tally_server::standalone::run`, the same code as the `tally-gateway` binary):
//! it loads the config, refuses a key file others can read, connects to the chain, and logs
//! one "listening on" line to stderr once it is bound.

use crate::cli::ServeArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Serves until interrupted.
pub async fn run(a: ServeArgs, _out: Output) -> Result<()> {
    tally_server::standalone::run(&a.config)
        .await
        .map_err(CliError::Service)
}
