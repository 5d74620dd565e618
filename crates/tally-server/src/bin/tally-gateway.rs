//! `tally-gateway --config gateway.toml`: the standalone metering reverse proxy.
//! Funding is read from the chain at `rpc_url` through tally-chain's `ChainFunding`; the
//! whole gateway is [`tally_server::standalone::run`].

use std::path::PathBuf;

fn usage() -> ! {
    eprintln!("usage: tally-gateway --config <file.toml>");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => PathBuf::from(p),
        _ => usage(),
    };
    let format = match std::env::var("TALLY_LOG_FORMAT").as_deref() {
        Ok("json") => tally_server::standalone::LogFormat::Json,
        _ => tally_server::standalone::LogFormat::Text,
    };
    if let Err(e) = tally_server::standalone::init_logging(format) {
        eprintln!("tally-gateway: {e}");
        std::process::exit(2);
    }
    if let Err(e) = tally_server::standalone::run(&path).await {
        eprintln!("tally-gateway: {e}");
        std::process::exit(1);
    }
}
