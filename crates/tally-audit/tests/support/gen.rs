//! A generator of valid protocol-v2 statements for tests and benchmarks, shared by the
//! integration tests and the examples (`#[path]`-included, so it is not public API).
//!
//! Records travel on several lanes chosen pseudo-randomly; each acknowledges a state a
//! random lag behind the log (never going backwards on its lane), as a client with requests
//! in flight does (spec/PROTOCOL.md §5.5). Routes alternate a fixed price (10) and a metered
//! one (2 per unit, 1–50 units), with an occasional credit. Every record is built by the
//! rules and self-checked with `tally_core::Sequence` before it is written. Keys are derived
//! from constant seeds: this is test data.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use tally_audit::{Statement, StatementHeader, StatementWriter, STATEMENT_FORMAT};
use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::request::{request_hash, response_hash, RequestSalt};
use tally_core::sequence::{LogState, SequenceError, MAX_LANES};
use tally_core::{
    Authorization, ChannelId, Checkpoint, Hash, Outcome, Record, SecretKey, Sequence, Signature,
    SignedCheckpoint,
};
use tally_http::payment::WireEip712Sig;
use tally_http::terms::{ChainTerms, CheckpointPolicy, PathMatch, RefundPolicy, TERMS_FORMAT};
use tally_http::{Amount, Price, RoutePrice, Terms, WireCheckpoint, WireRecord};
use tally_log::{Blake3Hasher, Frontier};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Records.
    pub records: u64,
    /// Lanes used (the terms allow all `MAX_LANES`).
    pub lanes: u32,
    /// The most an acknowledgement lags behind the log.
    pub max_lag: u64,
    /// A checkpoint every this many records (0: only at the end), and one at the end.
    pub checkpoint_every: u64,
    /// Seed of the lane and lag choices.
    pub seed: u64,
}

impl Options {
    /// `records` records on 8 lanes lagging up to 24 behind, a checkpoint every 100,000.
    pub fn new(records: u64) -> Self {
        Options {
            records,
            lanes: 8,
            max_lag: 24,
            checkpoint_every: 100_000,
            seed: 1,
        }
    }
}

/// The fixed test keys.
pub fn client_key() -> SecretKey {
    SecretKey::from_seed(&[1; 32])
}

/// The provider's test key.
pub fn provider_key() -> SecretKey {
    SecretKey::from_seed(&[2; 32])
}

/// The channel billed.
pub const CHANNEL: ChannelId = ChannelId([7; 32]);

/// The terms every generated record signs.
pub fn terms(provider: &SecretKey) -> Terms {
    Terms {
        format: TERMS_FORMAT.into(),
        provider_key: provider.public(),
        chain: ChainTerms {
            chain_id: 31337,
            contract: Address::repeat_byte(0xdd).to_string(),
            asset: Address::repeat_byte(0xcc).to_string(),
            pay_to: Address::repeat_byte(0xbb).to_string(),
        },
        credit_limit: Amount(u128::MAX / 2),
        max_lanes: MAX_LANES,
        checkpoint: CheckpointPolicy {
            every_records: 100_000,
            every_seconds: 0,
            every_amount: Amount(0),
        },
        charge_server_errors: false,
        refunds: RefundPolicy {
            server_errors: true,
            over_max: true,
        },
        max_request_bytes: 1 << 20,
        max_response_bytes: 8 << 20,
        routes: vec![
            RoutePrice {
                method: "GET".into(),
                path: "/v1/items".into(),
                path_match: PathMatch::Prefix,
                mime_type: None,
                price: Price::Fixed { amount: Amount(10) },
            },
            RoutePrice {
                method: "POST".into(),
                path: "/v1/complete".into(),
                path_match: PathMatch::Exact,
                mime_type: None,
                price: Price::Metered(tally_http::MeteredPrice::header("x-tokens", 2, 4000)),
            },
        ],
        unmatched: Default::default(),
    }
}

/// Builds a log record by record, following the rules (or, for tests, breaking one).
pub struct Generator {
    pub opts: Options,
    pub client: SecretKey,
    pub provider: SecretKey,
    signer: PrivateKeySigner,
    domain: Eip712Domain,
    pub terms_text: String,
    pub terms_hash: Hash,
    frontier: Frontier,
    /// The states of the last `max_lag + 64` sizes, oldest first.
    recent: VecDeque<LogState>,
    /// Per lane: next seq and the largest size acknowledged.
    lanes: Vec<(u64, u64)>,
    sequence: Sequence,
    rng: u64,
    pub checkpoints: Vec<WireCheckpoint>,
    last_checkpoint: Option<u64>,
}

impl Generator {
    pub fn new(opts: Options) -> Self {
        let provider = provider_key();
        let terms_bytes = terms(&provider).render();
        let empty = LogState {
            size: 0,
            root: Blake3Hasher.empty(),
            cumulative: 0,
        };
        Generator {
            opts,
            client: client_key(),
            terms_hash: tally_http::terms::terms_hash(&terms_bytes),
            terms_text: String::from_utf8_lossy(&terms_bytes).into_owned(),
            provider,
            signer: PrivateKeySigner::from_bytes(&B256::repeat_byte(3))
                .unwrap_or_else(|e| unreachable!("a constant key: {e}")),
            domain: tally_chain::eip712::domain(31337, Address::repeat_byte(0xdd)),
            frontier: Frontier::default(),
            recent: VecDeque::from([empty]),
            lanes: vec![(0, 0); MAX_LANES as usize],
            sequence: Sequence::new(empty.root),
            rng: opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            checkpoints: Vec::new(),
            last_checkpoint: None,
        }
    }

    fn random(&mut self, bound: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % bound.max(1)
    }

    /// The log's current state.
    pub fn head(&self) -> LogState {
        self.sequence.head()
    }

    /// The state at `size`, if still remembered.
    pub fn state_at(&self, size: u64) -> Option<LogState> {
        self.recent.iter().find(|s| s.size == size).copied()
    }

    /// Lane `lane`'s (next seq, largest acknowledged size).
    pub fn lane(&self, lane: u32) -> (u64, u64) {
        self.lanes[lane as usize]
    }

    /// The honest next record of `lane` (or a random lane), unsigned.
    pub fn plan_on(&mut self, lane: Option<u32>) -> (Authorization, Outcome) {
        let index = self.head().size;
        let lane = lane.unwrap_or_else(|| self.random(u64::from(self.opts.lanes)) as u32);
        let lag = self.random(self.opts.max_lag + 1).min(index);
        let (seq, lane_ack) = self.lanes[lane as usize];
        let ack = self
            .state_at((index - lag).max(lane_ack))
            .unwrap_or_else(|| self.head());
        let head = self.head();
        let credit = index % 97 == 96 && head.cumulative >= 5;
        let (method, path, max, units, amount): (&str, &str, u128, u64, i128) = if credit {
            ("POST", "/tally/v1/disputes", 0, 0, -5)
        } else if index % 2 == 1 {
            let units = index % 50 + 1;
            (
                "POST",
                "/v1/complete",
                4000,
                units,
                i128::from(units as u32) * 2,
            )
        } else {
            ("GET", "/v1/items", 10, 1, 10)
        };
        let a = Authorization {
            version: tally_core::VERSION,
            channel_id: CHANNEL,
            lane,
            seq,
            // A statement never carries the salt: any fixed one makes a valid bill.
            request_hash: request_hash(
                &RequestSalt([0x5a; 32]),
                method,
                path,
                "",
                &index.to_le_bytes(),
            ),
            max_amount: max,
            ack_size: ack.size,
            ack_root: ack.root,
            ack_cumulative: ack.cumulative,
            terms_hash: self.terms_hash,
        };
        let cumulative =
            tally_core::record::apply_amount(head.cumulative, amount).unwrap_or(head.cumulative);
        let o = Outcome {
            version: tally_core::VERSION,
            channel_id: CHANNEL,
            lane,
            seq,
            index,
            authorization_hash: Hash([0; 32]),
            units: [units, 0, 0, 0],
            amount,
            cumulative,
            response_hash: response_hash(200, b"ok"),
            time_ms: 1_700_000_000_000 + index,
        };
        (a, o)
    }

    /// The honest next record, unsigned.
    pub fn plan(&mut self) -> (Authorization, Outcome) {
        self.plan_on(None)
    }

    /// Signs `a` (with `client_key`, or the session key), binds the outcome to it and appends
    /// the record as stated; returns it with the sequence rules' verdict on it.
    pub fn commit(
        &mut self,
        a: Authorization,
        mut o: Outcome,
        client_key: Option<&SecretKey>,
    ) -> (Record, Result<u128, SequenceError>) {
        let sig = a.sign(client_key.unwrap_or(&self.client));
        o.authorization_hash = a.signed_hash(&sig);
        let record = Record::new(a, sig, o);
        let verdict = self.sequence.check_next(&record);
        self.frontier.push(&Blake3Hasher, record.leaf_hash());
        let root = self.frontier.root(&Blake3Hasher);
        self.sequence.push(&record, root);
        let lane = &mut self.lanes[a.lane.min(MAX_LANES - 1) as usize];
        *lane = (a.seq.saturating_add(1), lane.1.max(a.ack_size));
        self.recent.push_back(self.sequence.head());
        while self.recent.len() as u64 > self.opts.max_lag + 64 {
            self.recent.pop_front();
        }
        let size = self.head().size;
        if self.opts.checkpoint_every > 0 && size.is_multiple_of(self.opts.checkpoint_every) {
            self.checkpoint();
        }
        (record, verdict)
    }

    /// The honest next record, with its provider signature.
    pub fn next_wire(&mut self) -> WireRecord {
        let (a, o) = self.plan();
        let (record, verdict) = self.commit(a, o, None);
        assert!(verdict.is_ok(), "generated an invalid record: {verdict:?}");
        self.wire(&record)
    }

    /// The record with the provider's signature.
    pub fn wire(&self, record: &Record) -> WireRecord {
        WireRecord::new(record, self.provider_sign(record))
    }

    pub fn provider_sign(&self, record: &Record) -> Signature {
        self.provider.sign(&record.outcome.to_bytes())
    }

    /// A cosigned checkpoint (note and EIP-712) of the current state.
    pub fn checkpoint(&mut self) {
        let head = self.head();
        if self.last_checkpoint == Some(head.size) {
            return;
        }
        self.last_checkpoint = Some(head.size);
        let cp = Checkpoint {
            channel_id: CHANNEL,
            size: head.size,
            root: head.root,
            cumulative: head.cumulative,
        };
        let wire = self.signed_checkpoint(cp);
        self.checkpoints.push(wire);
    }

    /// `cp` signed by the client (note and EIP-712) and cosigned by the provider, whatever
    /// it says.
    pub fn signed_checkpoint(&self, cp: Checkpoint) -> WireCheckpoint {
        let note = SignedCheckpoint {
            checkpoint: cp,
            client_signature: cp.sign_client(&self.client),
            provider_cosignature: Some((
                1_700_000_000,
                cp.cosign_provider(&self.provider, 1_700_000_000),
            )),
        }
        .to_note(&self.client.public(), &self.provider.public());
        let chain = tally_chain::ChainCheckpoint::sign(&self.signer, &self.domain, cp)
            .unwrap_or_else(|e| unreachable!("signing with a constant key: {e}"));
        WireCheckpoint {
            note,
            eip712: WireEip712Sig::from_parts(chain.sig.parts()),
        }
    }

    /// The header, with the checkpoints so far.
    pub fn header(&self) -> StatementHeader {
        StatementHeader {
            format: STATEMENT_FORMAT.into(),
            channel_id: CHANNEL,
            client_key: self.client.public(),
            provider_key: self.provider.public(),
            terms: Some(self.terms_text.clone()),
            checkpoints: self.checkpoints.clone(),
        }
    }

    /// The checkpoint signer's address (what the chain knows as the channel's signer).
    pub fn signer_address(&self) -> Address {
        self.signer.address()
    }

    pub fn domain(&self) -> Eip712Domain {
        self.domain.clone()
    }
}

/// Makes record `at` of a log in place of the honest one (a provider that breaks a rule
/// and signs anyway): returns the authorization, the outcome and the key to sign with.
pub type Tamper = Box<dyn FnOnce(&mut Generator) -> (Authorization, Outcome, Option<SecretKey>)>;

/// A log of `opts.records` records where each record `at` of `tampers` is the tamper's, with
/// honest records on top of it as stated; with its final checkpoint.
pub fn build(opts: Options, mut tampers: Vec<(u64, Tamper)>) -> (Generator, Vec<WireRecord>) {
    let mut g = Generator::new(opts);
    let mut wires = Vec::new();
    for i in 0..opts.records {
        match tampers.iter().position(|(at, _)| *at == i) {
            Some(k) => {
                let (_, tamper) = tampers.swap_remove(k);
                let (a, o, key) = tamper(&mut g);
                let (r, _) = g.commit(a, o, key.as_ref());
                wires.push(g.wire(&r));
            }
            // After a tampered record an honest one may be impossible (a lane that
            // acknowledged a future size): records go on as built, the verdict is the audit's.
            None => {
                let (a, o) = g.plan();
                let (r, _) = g.commit(a, o, None);
                wires.push(g.wire(&r));
            }
        }
    }
    g.checkpoint();
    (g, wires)
}

/// An honest statement in memory.
pub fn statement(opts: Options) -> Statement {
    let mut g = Generator::new(opts);
    let records: Vec<WireRecord> = (0..opts.records).map(|_| g.next_wire()).collect();
    g.checkpoint();
    Statement::from_records(g.header(), &records).expect("render")
}

/// Writes an honest statement of `opts.records` records to `path` in bounded memory:
/// records are built in order, provider-signed in parallel batches and streamed to a body
/// file, then the header (which lists every checkpoint) is written before the body.
pub fn write_file(opts: Options, path: &Path) -> Result<Generator, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let body_path = path.with_extension("body");
    let file = File::create(&body_path).map_err(|e| err(&e))?;
    let mut body = StatementWriter::body(BufWriter::with_capacity(1 << 20, file));
    let mut g = Generator::new(opts);
    let mut batch = Vec::with_capacity(8192);
    for _ in 0..opts.records {
        let (a, o) = g.plan();
        let (record, verdict) = g.commit(a, o, None);
        verdict.map_err(|e| format!("generated an invalid record: {e}"))?;
        batch.push(record);
        if batch.len() == batch.capacity() {
            flush(&g.provider, &mut batch, &mut body).map_err(|e| err(&e))?;
        }
    }
    flush(&g.provider, &mut batch, &mut body).map_err(|e| err(&e))?;
    g.checkpoint();
    body.finish().map_err(|e| err(&e))?;
    let mut out = BufWriter::new(File::create(path).map_err(|e| err(&e))?);
    serde_json::to_writer(&mut out, &g.header()).map_err(|e| err(&e))?;
    out.write_all(b"\n").map_err(|e| err(&e))?;
    let mut src = File::open(&body_path).map_err(|e| err(&e))?;
    std::io::copy(&mut src, &mut out).map_err(|e| err(&e))?;
    out.flush().map_err(|e| err(&e))?;
    std::fs::remove_file(&body_path).map_err(|e| err(&e))?;
    Ok(g)
}

/// Provider-signs a batch on all cores and writes it in order.
fn flush<W: Write>(
    provider: &SecretKey,
    batch: &mut Vec<Record>,
    body: &mut StatementWriter<W>,
) -> Result<(), tally_audit::StatementError> {
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get());
    let part = batch.len().div_ceil(threads).max(1);
    let signed: Vec<Vec<WireRecord>> = std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(part)
            .map(|rs| {
                s.spawn(move || {
                    rs.iter()
                        .map(|r| WireRecord::new(r, provider.sign(&r.outcome.to_bytes())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for w in signed.iter().flatten() {
        body.push(w)?;
    }
    batch.clear();
    Ok(())
}
