//! What a gateway is configured with (the `[gateway]`, `[chain]` and `[pricing]` sections of
//! its config, spec/HTTP.md §10), and the defaults a config may leave out.

use std::path::PathBuf;
use std::time::Duration;

use tally_http::terms::{ChainTerms, CheckpointPolicy, RefundPolicy};
use tally_http::{Amount, RoutePrice, Unmatched};
use tally_log::StoreConfig;

use crate::durability::Durability;

/// Everything a gateway is configured with besides its key and funding source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the log (`log/`) and bindings (`bindings/`) sled databases live.
    pub data_dir: PathBuf,
    /// Chain, contract, token and payee.
    pub chain: ChainTerms,
    /// Most served beyond the last client-signed checkpoint (P5).
    pub credit_limit: u128,
    /// How many lanes (requests in flight at once) a channel may use (spec/PROTOCOL.md §5.4).
    pub max_lanes: u32,
    /// When to ask for checkpoints.
    pub checkpoint: CheckpointPolicy,
    /// Whether upstream 5xx responses are charged.
    pub charge_server_errors: bool,
    /// Automatic refunds on dispute.
    pub refunds: RefundPolicy,
    /// Largest paid request body read.
    pub max_request_bytes: u64,
    /// Largest paid response body returned.
    pub max_response_bytes: u64,
    /// The price list.
    pub routes: Vec<RoutePrice>,
    /// How long a funding read is trusted.
    pub funding_ttl: Duration,
    /// The shortest withdraw delay a channel may have to be served (seconds): the payee's
    /// window to claim after the payer starts an exit (P4). Never below the contract's
    /// `MIN_WITHDRAW_DELAY`; [`Settings::new`] and the config file both default to
    /// `tally_chain::DEFAULT_MIN_WITHDRAW_DELAY` (six hours, spec/CHAIN.md §5).
    pub min_withdraw_delay: u32,
    /// Per channel, the bytes of responses kept for byte-identical retries of each lane's
    /// last seq (larger or older ones are answered with their record instead).
    pub replay_cache_bytes: usize,
    /// Most time an admitted request may spend at the upstream, response body included; past
    /// it nothing is recorded and the channel is free again (spec/HTTP.md §9).
    pub upstream_timeout: Duration,
    /// Log store tuning.
    pub store: StoreConfig,
    /// What happens to requests no route prices.
    pub unmatched: Unmatched,
    /// Most channels whose state is kept in memory; idle ones beyond it are evicted (and
    /// reloaded from the log on their next request).
    pub max_channels_in_memory: usize,
    /// The provider's admin token for channel reads (spec/HTTP.md §5.1); `None`: only the
    /// channel's session key can read.
    pub admin_token: Option<crate::readauth::AdminToken>,
    /// When receipts are sent: after durability, or promised ahead of it (DESIGN.md §8).
    pub durability: Durability,
    /// The token's decimals, for the provider console's display only (spec/HTTP.md §11.3).
    pub token_decimals: Option<u8>,
}

impl Settings {
    /// Defaults for everything but chain and routes.
    pub fn new(data_dir: PathBuf, chain: ChainTerms, routes: Vec<RoutePrice>) -> Self {
        Settings {
            data_dir,
            chain,
            credit_limit: 1_000_000,
            max_lanes: 64,
            checkpoint: CheckpointPolicy {
                every_records: 1000,
                every_seconds: 60,
                every_amount: Amount(100_000),
            },
            charge_server_errors: false,
            refunds: RefundPolicy {
                server_errors: true,
                over_max: true,
            },
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            min_withdraw_delay: tally_chain::funding::DEFAULT_MIN_WITHDRAW_DELAY,
            routes,
            funding_ttl: Duration::from_secs(2),
            replay_cache_bytes: 256 << 10,
            upstream_timeout: Duration::from_secs(120),
            store: StoreConfig::default(),
            unmatched: Unmatched::Free,
            max_channels_in_memory: 100_000,
            admin_token: None,
            durability: Durability::Sync,
            token_decimals: None,
        }
    }
}
