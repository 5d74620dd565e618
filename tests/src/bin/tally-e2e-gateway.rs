//! The standalone gateway for the crash tests, built inside this package so the tests can
//! start it as a separate OS process (`env!("CARGO_BIN_EXE_tally-e2e-gateway")`). It is
//! `tally-gateway` exactly: both call [`tally_server::standalone::run`].

use std::path::PathBuf;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => PathBuf::from(p),
        _ => {
            eprintln!("usage: tally-e2e-gateway --config <file.toml>");
            std::process::exit(2)
        }
    };
    let format = match std::env::var("TALLY_LOG_FORMAT").as_deref() {
        Ok("json") => tally_server::standalone::LogFormat::Json,
        _ => tally_server::standalone::LogFormat::Text,
    };
    if let Err(e) = tally_server::standalone::init_logging(format) {
        eprintln!("tally-e2e-gateway: {e}");
        std::process::exit(2);
    }
    if let Err(e) = tally_server::standalone::run(&path).await {
        eprintln!("tally-e2e-gateway: {e}");
        std::process::exit(1);
    }
}
