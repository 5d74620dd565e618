//! `tally`: the thin binary. It parses the command line, runs the command on a tokio
//! runtime and maps the result to an exit code (0 ok, 1 verification failed, 2 usage or
//! I/O error). It must never print anything but the command's output and one error line,
//! and never a secret.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tally_cli::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tally: starting the runtime: {e}");
            return ExitCode::from(tally_cli::EXIT_USAGE);
        }
    };
    match runtime.block_on(tally_cli::commands::run(cli)) {
        Ok(()) => ExitCode::from(tally_cli::EXIT_OK),
        Err(e) => {
            eprintln!("tally: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
