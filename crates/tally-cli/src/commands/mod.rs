//! One module per command; each parses nothing itself (clap did) and only wires library
//! modules together and reports through [`Output`].

pub mod bill;
pub mod channel;
pub mod checkpoint;
pub mod contract;
pub mod db;
pub mod demo;
pub mod dispute;
pub mod export;
pub mod fsck;
pub mod gasless;
pub mod keygen;
pub mod pay;
pub mod prove;
pub mod serve;
pub mod settle;
pub mod verify;
pub mod verify_proof;
pub mod watch;

use crate::cli::{ChannelCommand, Cli, Command, ContractCommand, DbCommand, DisputeCommand};
use crate::error::Result;
use crate::output::Output;

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> Result<()> {
    let out = Output { json: cli.json };
    match cli.command {
        Command::Demo(a) => demo::run(a, out).await,
        Command::Keygen(a) => keygen::run(a, out),
        Command::Serve(a) => serve::run(a, out).await,
        Command::Pay(a) => pay::run(a, out).await,
        Command::Checkpoint(a) => checkpoint::run(a, out).await,
        Command::Verify(a) => verify::run(a, out).await,
        Command::Bill(mut a) => {
            a.html.get_or_insert_with(|| "bill.html".into());
            verify::run(a, out).await
        }
        Command::Prove(a) => prove::run(a, out),
        Command::VerifyProof(a) => verify_proof::run(a, out).await,
        Command::Dispute(DisputeCommand::Submit(a)) => dispute::submit(a, out).await,
        Command::Channel(ChannelCommand::Open(a)) => channel::open(a, out).await,
        Command::Channel(ChannelCommand::Topup(a)) => channel::topup(a, out).await,
        Command::Channel(ChannelCommand::Withdraw(a)) => channel::withdraw(a, out).await,
        Command::Channel(ChannelCommand::Status(a)) => channel::status(a, out).await,
        Command::Channel(ChannelCommand::Close(a)) => channel::close(a, out).await,
        Command::Channel(ChannelCommand::Watch(a)) => watch::run(a, out).await,
        Command::Contract(ContractCommand::Deploy(a)) => contract::deploy(a, out).await,
        Command::Settle(a) => settle::run(a, out).await,
        Command::Export(a) => export::run(a, out).await,
        Command::Fsck(a) => fsck::run(a, out),
        Command::Db(DbCommand::Init(a)) => db::init(a, out).await,
    }
}

/// Parses a channel id (64 hex digits, optional `0x`).
pub fn channel_id(text: &str) -> Result<tally_core::ChannelId> {
    tally_core::ChannelId::from_hex(text.trim_start_matches("0x"))
        .map_err(|e| crate::error::CliError::Usage(format!("channel id {text:?}: {e}")))
}
