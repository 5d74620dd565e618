//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 verification failed (a discrepancy, a bad proof, a \
refused dispute, provider misbehavior); 2 usage or I/O error (bad arguments, missing or \
unreadable files, unreachable node or gateway).";

/// tally: verifiable metering for pay-per-request APIs.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole protocol locally end to end (anvil, contracts, channel, gateway,
    /// thousands of paid calls, onchain settlement, audit, proof, dispute).
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Generate key files (mode 0600): a client profile's session and checkpoint keys, or a
    /// provider key.
    #[command(after_help = EXIT_CODES)]
    Keygen(KeygenArgs),
    /// Run the metering gateway (reverse proxy) from a TOML config.
    #[command(after_help = EXIT_CODES)]
    Serve(ServeArgs),
    /// Make a paid request with a client profile; prints the body (a streamed answer as it
    /// arrives, its receipt checked at its end), keeps the receipt in the mirror.
    #[command(visible_alias = "request", after_help = EXIT_CODES)]
    Pay(PayArgs),
    /// Sign a checkpoint at the mirror's size and have the provider cosign it (needed before
    /// `prove` covers the latest records).
    #[command(after_help = EXIT_CODES)]
    Checkpoint(ProfileArg),
    /// Audit a bill: a statement file, or the provider's endpoints.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),
    /// Audit a bill like `verify`, and write it as one self-contained HTML page (--html,
    /// default bill.html) that shows the verdict, usage over time and every record, and
    /// checks any record's proof in the browser.
    #[command(after_help = EXIT_CODES)]
    Bill(VerifyArgs),
    /// Write a proof bundle for record N of the client's mirror.
    #[command(after_help = EXIT_CODES)]
    Prove(ProveArgs),
    /// Check a proof bundle offline, and against the onchain root with --rpc.
    #[command(name = "verify-proof", after_help = EXIT_CODES)]
    VerifyProof(VerifyProofArgs),
    /// Disputes.
    #[command(subcommand)]
    Dispute(DisputeCommand),
    /// Client side: a channel's onchain operations (open, top up, withdraw, cooperative
    /// close) and its state.
    #[command(subcommand, after_help = EXIT_CODES)]
    Channel(ChannelCommand),
    /// Provider side: the settlement contract itself (deploy it on a chain).
    #[command(subcommand, after_help = EXIT_CODES)]
    Contract(ContractCommand),
    /// Provider side: claim every due checkpoint onchain now, through the settlement worker.
    #[command(after_help = EXIT_CODES)]
    Settle(SettleArgs),
    /// Export a channel's log as a statement file (from a gateway's store or a client mirror).
    #[command(after_help = EXIT_CODES)]
    Export(ExportArgs),
    /// Check a log store's integrity (every channel, or one).
    #[command(after_help = EXIT_CODES)]
    Fsck(FsckArgs),
    /// Provider side: the cluster database of `[store] kind = "postgres"` (spec/CLUSTER.md).
    #[command(subcommand, after_help = EXIT_CODES)]
    Db(DbCommand),
}

/// `tally db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create or migrate the cluster schema and record the shard count (idempotent; every
    /// node also does it at start). Refuses a database of another shard count or a newer
    /// schema.
    #[command(after_help = EXIT_CODES)]
    Init(DbInitArgs),
}

/// `tally db init`.
#[derive(Debug, Args)]
pub struct DbInitArgs {
    /// The gateway configuration whose `[store]` names the database.
    #[arg(long)]
    pub config: PathBuf,
}

/// `tally demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Paid calls to make.
    #[arg(long, default_value_t = 5000)]
    pub calls: u64,
    /// Keep the artifacts (profile, gateway data, statement, bundle) in this new directory
    /// instead of a temporary one.
    #[arg(long, conflicts_with = "cluster")]
    pub keep: Option<PathBuf>,
    /// Run the cluster-mode demo instead (spec/CLUSTER.md): a throwaway PostgreSQL (needs
    /// PostgreSQL 15: `bash tools/install-postgres.sh`), N `tally serve` nodes behind a
    /// load balancer, the channel's owner killed mid-way, the failover measured.
    #[arg(long, value_name = "NODES", num_args = 0..=1, default_missing_value = "3")]
    pub cluster: Option<usize>,
}

/// `tally keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write into (created if missing). Existing key files are never
    /// overwritten.
    #[arg(long)]
    pub dir: PathBuf,
    /// Write a provider key (provider.key) instead of a client's session.key and
    /// checkpoint.key.
    #[arg(long)]
    pub provider: bool,
}

/// `tally serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The gateway's TOML config (see the README's config reference).
    #[arg(long)]
    pub config: PathBuf,
    /// How log events go to stderr: `text` lines or one JSON object per line; the level
    /// filter is `RUST_LOG` (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// JSON Lines.
    Json,
}

/// The client profile argument.
#[derive(Debug, Args)]
pub struct ProfileArg {
    /// The client profile directory (client.toml, keys, mirror/).
    #[arg(long)]
    pub client: PathBuf,
}

/// `tally pay`.
#[derive(Debug, Args)]
pub struct PayArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// HTTP method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// A header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The most to authorize for this call (never more than the route's price).
    #[arg(long)]
    pub max_amount: Option<u128>,
    /// Accept provider terms that charge more (or refund less) than the terms this profile
    /// paid under before; without it such a change exits 1 and lists what went up.
    #[arg(long)]
    pub accept_terms: bool,
    /// A path (`/v1/items/7`) or a URL under the profile's provider.
    pub url: String,
}

/// `tally verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A statement file (from `tally export`).
    #[arg(long, conflicts_with = "provider")]
    pub statement: Option<PathBuf>,
    /// Fetch the statement from this provider's endpoints (needs --client).
    #[arg(long, requires = "client")]
    pub provider: Option<String>,
    /// A client profile: its mirror is compared with the statement, and its provider is used
    /// when neither --statement nor --provider is given.
    #[arg(long)]
    pub client: Option<PathBuf>,
    /// Compare with the channel's onchain state at this JSON-RPC URL.
    #[arg(long)]
    pub rpc: Option<String>,
    /// The settlement contract (default: from the terms in the statement).
    #[arg(long)]
    pub contract: Option<String>,
    /// Verifying threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the bill as a self-contained HTML page to this file (spec/BILL.md).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Records the HTML bill carries proofs for: a number, or `all` (about 1 KB each; by
    /// default every record of a bill up to 10,000 records, else the discrepant ones and an
    /// even spread).
    #[arg(long, value_name = "N|all", value_parser = parse_evidence)]
    pub evidence: Option<Evidence>,
}

/// How many records an HTML bill carries proofs for.
#[derive(Debug, Clone, Copy)]
pub enum Evidence {
    /// Every record.
    All,
    /// At most this many.
    AtMost(usize),
}

fn parse_evidence(s: &str) -> Result<Evidence, String> {
    match s {
        "all" => Ok(Evidence::All),
        n => n
            .parse()
            .map(Evidence::AtMost)
            .map_err(|_| format!("{s:?} is neither a number nor `all`")),
    }
}

/// `tally prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    #[command(flatten)]
    pub profile: ProfileArg,
    /// The record's index.
    #[arg(long)]
    pub index: u64,
    /// Where to write the bundle (default: stdout).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// `tally verify-proof`.
#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Also require the bundle's checkpoint to be the channel's claimed state on this chain.
    #[arg(long)]
    pub rpc: Option<String>,
}

/// `tally dispute …`.
#[derive(Debug, Subcommand)]
pub enum DisputeCommand {
    /// Post a bundle to the provider's dispute endpoint; prints the credit or the refusal.
    #[command(after_help = EXIT_CODES)]
    Submit(DisputeSubmitArgs),
}

/// `tally dispute submit`.
#[derive(Debug, Args)]
pub struct DisputeSubmitArgs {
    /// The bundle file (from `tally prove`).
    pub bundle: PathBuf,
    /// The provider's base URL (default: the profile's).
    #[arg(long)]
    pub provider: Option<String>,
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `tally settle`.
#[derive(Debug, Args)]
pub struct SettleArgs {
    /// The gateway's TOML config (its store must not be open in a running gateway).
    #[arg(long)]
    pub config: PathBuf,
    /// The payee's wallet key file (secp256k1, 64 hex digits, mode 0600); default: the
    /// config's `[settlement].payee_key_file`.
    #[arg(long)]
    pub payee_key: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// `tally contract …`.
#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// Deploy the Tally settlement contract from the committed artifact (after checking the
    /// chain runs EVM version cancun); prints its address, and with --config writes it (and
    /// the chain id) into a gateway config's `[chain]` table.
    #[command(after_help = EXIT_CODES)]
    Deploy(ContractDeployArgs),
}

/// `tally contract deploy`.
#[derive(Debug, Args)]
pub struct ContractDeployArgs {
    /// JSON-RPC URL of the chain.
    #[arg(long)]
    pub rpc: String,
    /// The deploying wallet's key file (secp256k1, 64 hex digits, mode 0600); it pays the gas
    /// and has no role in the contract afterwards.
    #[arg(long)]
    pub key: PathBuf,
    /// A gateway config (TOML) to write `[chain] contract` and `chain_id` into, keeping the
    /// rest of the file (comments included) as it is. It is read before deploying, so a
    /// missing or malformed file costs no gas.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `tally export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Export from a gateway's store (its config).
    #[arg(long, conflicts_with = "client", requires = "channel")]
    pub config: Option<PathBuf>,
    /// The channel (with --config).
    #[arg(long)]
    pub channel: Option<String>,
    /// Export from a client profile's mirror.
    #[arg(long)]
    pub client: Option<PathBuf>,
    /// The statement file to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// `tally fsck`.
#[derive(Debug, Args)]
pub struct FsckArgs {
    /// The log store directory (a gateway's `data_dir/log`, or a profile's `mirror/log`).
    pub store: PathBuf,
    /// Only this channel.
    #[arg(long)]
    pub channel: Option<String>,
}

/// `tally channel …`.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Approve the deposit and open a channel paid by --payer-key, with the profile's
    /// checkpoint key as the signer; prints the channel id. With --gasless, sign the deposit
    /// instead and let the provider's relay submit it (the payer needs no ETH).
    #[command(after_help = EXIT_CODES)]
    Open(ChannelOpenArgs),
    /// Approve and add to a channel's deposit (from --payer-key's wallet); with --gasless,
    /// signed and submitted by the provider's relay.
    #[command(after_help = EXIT_CODES)]
    Topup(ChannelTopupArgs),
    /// Start the withdraw delay (the payer's wallet); with --finalize, after the delay,
    /// refund the unclaimed deposit and close the channel.
    #[command(after_help = EXIT_CODES)]
    Withdraw(ChannelWithdrawArgs),
    /// Read a channel's onchain state: deposit, claimed, size, root, withdraw state.
    #[command(after_help = EXIT_CODES)]
    Status(ChannelStatusArgs),
    /// Close at once, cooperatively: sign the Close of the mirror's verified state, get the
    /// provider's payee signature over it, submit cooperativeClose (gas from --payer-key),
    /// then check the channel is closed and the payout and refund are what the state implies.
    #[command(after_help = EXIT_CODES)]
    Close(ChannelCloseArgs),
    /// Watch the channel onchain and answer a payee claim that is older and higher than the
    /// newest credit the provider cosigned (kept in the profile's mirror by `dispute
    /// submit`): post that credit with claimCosigned inside the claim's challenge window.
    /// Needs no gateway; runs until the channel is closed (or once, with --once).
    #[command(after_help = EXIT_CODES)]
    Watch(ChannelWatchArgs),
}

/// The chain a channel command talks to.
#[derive(Debug, Args)]
pub struct ChainArgs {
    /// JSON-RPC URL of the chain.
    #[arg(long)]
    pub rpc: String,
    /// The Tally settlement contract.
    #[arg(long)]
    pub contract: String,
}

/// The chain an open or a top-up talks to: as [`ChainArgs`], except that `--provider` may
/// name the contract (its terms' `chain.contract`).
#[derive(Debug, Args)]
pub struct FundingChainArgs {
    /// JSON-RPC URL of the chain (always read directly: the result of a relayed deposit is
    /// checked on the chain, not taken from the provider).
    #[arg(long)]
    pub rpc: String,
    /// The Tally settlement contract (default with --provider: the provider's terms).
    #[arg(long)]
    pub contract: Option<String>,
    /// The provider's base URL: its terms (`/.well-known/tally`) supply the contract, token
    /// and payee not given, and its relay submits a --gasless deposit.
    #[arg(long)]
    pub provider: Option<String>,
    /// Pay no gas: sign the deposit (EIP-3009 or EIP-2612, --auth) and have the provider's
    /// relay submit it (spec/HTTP.md §12). Needs --provider.
    #[arg(long, requires = "provider")]
    pub gasless: bool,
    /// The token authorization a --gasless deposit carries: `eip3009`
    /// (receiveWithAuthorization, USDC has it) or `permit` (EIP-2612).
    #[arg(long, value_enum, default_value_t = GaslessAuth::Eip3009)]
    pub auth: GaslessAuth,
}

/// The token authorization of a gasless deposit (spec/CHAIN.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GaslessAuth {
    /// EIP-3009 `receiveWithAuthorization`.
    Eip3009,
    /// EIP-2612 `permit`, plus a Tally-domain intent signature.
    Permit,
}

/// `tally channel open`.
#[derive(Debug, Args)]
pub struct ChannelOpenArgs {
    /// The client profile directory (from `tally keygen`): its checkpoint.key signs the
    /// channel's checkpoints.
    #[arg(long)]
    pub client: PathBuf,
    /// The payer's wallet key file (secp256k1, 64 hex digits, mode 0600); it funds the deposit
    /// (and, without --gasless, pays the gas).
    #[arg(long)]
    pub payer_key: PathBuf,
    #[command(flatten)]
    pub chain: FundingChainArgs,
    /// The deposit's ERC-20 token (default with --provider: the terms' asset).
    #[arg(long)]
    pub token: Option<String>,
    /// The provider's payee address (default with --provider: the terms' pay_to).
    #[arg(long)]
    pub payee: Option<String>,
    /// The initial deposit, in token base units.
    #[arg(long)]
    pub amount: u128,
    /// Seconds the payee keeps to claim after a withdraw starts (the help text is
    /// [`withdraw_delay_help`], built from tally-chain's constants).
    #[arg(long, default_value_t = crate::chain::DEFAULT_WITHDRAW_DELAY, help = withdraw_delay_help())]
    pub withdraw_delay: u32,
    /// The channel's salt, 64 hex digits (default: random).
    #[arg(long)]
    pub salt: Option<String>,
}

/// The help of `channel open --withdraw-delay`, from the constants themselves so it never
/// drifts from them: the contract's bounds and the gateway's default policy (spec/CHAIN.md §5).
pub fn withdraw_delay_help() -> String {
    format!(
        "Seconds the payee keeps to claim after a withdraw starts, also every challenge \
         window. The contract accepts {} to {}; a gateway serves only channels with at least \
         its min_withdraw_delay, by default {} (six hours)",
        tally_chain::MIN_WITHDRAW_DELAY,
        tally_chain::MAX_WITHDRAW_DELAY,
        tally_chain::DEFAULT_MIN_WITHDRAW_DELAY
    )
}

/// `tally channel topup`.
#[derive(Debug, Args)]
pub struct ChannelTopupArgs {
    /// The channel, 64 hex digits.
    #[arg(long)]
    pub channel: String,
    /// The funding wallet's key file (secp256k1, 64 hex digits, mode 0600); anyone may fund
    /// a channel.
    #[arg(long)]
    pub payer_key: PathBuf,
    #[command(flatten)]
    pub chain: FundingChainArgs,
    /// The amount to add, in token base units.
    #[arg(long)]
    pub amount: u128,
}

/// `tally channel withdraw`.
#[derive(Debug, Args)]
pub struct ChannelWithdrawArgs {
    /// The channel, 64 hex digits.
    #[arg(long)]
    pub channel: String,
    /// The payer's wallet key file (secp256k1, 64 hex digits, mode 0600).
    #[arg(long)]
    pub payer_key: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Finalize a withdraw whose delay has passed instead of starting one.
    #[arg(long)]
    pub finalize: bool,
}

/// `tally channel status`.
#[derive(Debug, Args)]
pub struct ChannelStatusArgs {
    /// The channel, 64 hex digits.
    #[arg(long)]
    pub channel: String,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// `tally channel close`.
#[derive(Debug, Args)]
pub struct ChannelCloseArgs {
    /// The client profile directory: its mirror's head is the state closed at, its
    /// checkpoint.key signs the Close.
    #[arg(long)]
    pub client: PathBuf,
    /// A wallet key file (secp256k1, 64 hex digits, mode 0600) that pays the gas; usually the
    /// payer's (anyone may submit a close; the refund always goes to the channel's payer).
    #[arg(long)]
    pub payer_key: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
}

/// `tally channel watch`.
#[derive(Debug, Args)]
pub struct ChannelWatchArgs {
    /// The client profile directory: its mirror holds the payee-cosigned credit state, its
    /// checkpoint.key signs it.
    #[arg(long)]
    pub client: PathBuf,
    /// A wallet key file (secp256k1, 64 hex digits, mode 0600) that pays the gas; usually
    /// the payer's (anyone may post a state).
    #[arg(long)]
    pub payer_key: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Seconds between reads of the channel; keep it well under the channel's withdraw
    /// delay (every challenge window is that long).
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// Check once, answer if needed, and exit, instead of watching until the channel closes.
    #[arg(long)]
    pub once: bool,
}
