//! The paying HTTP client: `client.get(url).send().await` signs the authorization, sends
//! request and payment together (P1), verifies the receipt and mirrors the record before
//! returning. A client is cheap to clone and `send` may be called from many tasks at once:
//! each request leases one of the channel's lanes (spec/PROTOCOL.md §5.4), so up to
//! `lanes` requests of one channel are in flight together.

pub mod credit;
mod ledger;
mod paid;
mod restore;
mod stream;
mod transmit;

pub use credit::{ClaimAnswer, CosignedCredit, Quiet};
pub use stream::{PaidStream, StreamPaid};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tally_chain::ChainCheckpoint;
use tally_core::request::{body_hash, request_hash, RequestSalt};
use tally_core::{
    Authorization, ChannelId, Checkpoint, Hash, PublicKey, Receipt, Record, SecretKey,
};
use tally_http::api::{ChannelState, DisputeGranted, DisputedExchange, RecordsPage, SessionBound};
use tally_http::headers::{
    decode_header, encode_header, API_PREFIX, CHECKPOINT, CHECKPOINT_REQUEST, PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
};
use tally_http::payment::{Requirement, WireEip712Sig};
use tally_http::read_auth::{ReadToken, READ_AUTH};
use tally_http::{ErrorBody, PaymentPayload, PaymentResponse, Price, Reason, SessionBinding};
use tokio::sync::Mutex;

use crate::discovery::{discover, Discovered};
use crate::error::{ClientError, Misbehavior};
use crate::lanes::LanePool;
use crate::mirror::Mirror;
use crate::receipt::{check_receipt, expected_charge, reported_units};
use crate::terms_guard::TermsGuard;

/// The mirror's meta key of the channel's request salt: kept so a provider that answers a
/// later binding with another salt is noticed (its records would no longer dispute).
const SALT_META: &str = "request_salt";

/// How to reach the provider and which channel and keys to pay with.
pub struct ClientConfig {
    /// The gateway, e.g. `http://127.0.0.1:8402` (no trailing slash).
    pub base_url: String,
    /// Where the mirror lives (its own sled files).
    pub data_dir: PathBuf,
    /// The channel opened onchain.
    pub channel_id: ChannelId,
    /// The ed25519 session key that signs authorizations and checkpoint notes.
    pub session_key: SecretKey,
    /// The secp256k1 checkpoint key registered as the channel's signer.
    pub checkpoint_key: PrivateKeySigner,
    /// If set, the provider key the terms must carry (else trusted on first use and pinned
    /// in the mirror).
    pub provider_key: Option<PublicKey>,
    /// Transport retries of one request (same bytes, so never charged twice).
    pub retries: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Adopt served terms that charge more or credit less than the ones accepted before
    /// (default `false`: such terms are refused and paying fails with
    /// [`ClientError::TermsRaised`] until [`Client::accept_terms`]; spec/HTTP.md §4.4).
    pub accept_terms_changes: bool,
    /// The most requests in flight at once (lanes used), capped by the terms' `max_lanes`.
    pub lanes: u32,
}

impl ClientConfig {
    /// A configuration with 3 retries and a 30 s timeout.
    pub fn new(
        base_url: impl Into<String>,
        data_dir: PathBuf,
        channel_id: ChannelId,
        session_key: SecretKey,
        checkpoint_key: PrivateKeySigner,
    ) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            data_dir,
            channel_id,
            session_key,
            checkpoint_key,
            provider_key: None,
            retries: 3,
            timeout: Duration::from_secs(30),
            accept_terms_changes: false,
            lanes: 32,
        }
    }
}

struct State {
    mirror: Mirror,
    /// The terms served now: what authorizations sign.
    terms: Discovered,
    /// The terms accepted, and whether the served ones may be paid under.
    guard: TermsGuard,
    contract: Address,
    stopped: Option<Misbehavior>,
    checkpoint_due: bool,
    /// The channel's request salt (spec/PROTOCOL.md §3.3), from the binding answer.
    salt: Option<RequestSalt>,
    /// Verified records whose receipts arrived ahead of a gap, by index (§5.5).
    ahead: std::collections::BTreeMap<u64, (Record, tally_core::Signature)>,
    /// Restores done so far (spec/HTTP.md §5.6): a receipt for a request signed before the
    /// latest one is disowned by it and never mirrored.
    restores: u64,
}

/// A paying client for one channel.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    channel: ChannelId,
    session_key: Arc<SecretKey>,
    session_public: PublicKey,
    checkpoint_key: Arc<PrivateKeySigner>,
    retries: u32,
    /// Per-attempt timeout, also the longest a request waits for its lane (PROTOCOL.md §5.4).
    timeout: Duration,
    state: Arc<Mutex<State>>,
    lanes: LanePool,
    /// Requests sent and not yet answered.
    in_flight: Arc<std::sync::atomic::AtomicU64>,
}

/// A response, with the receipt that paid for it.
#[derive(Clone, Debug)]
pub struct PaidResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The verified receipt (`None` on free routes).
    pub receipt: Option<Receipt>,
    /// The request and response behind the receipt's hashes, kept for a dispute.
    pub exchange: DisputedExchange,
}

/// A request being built; [`RequestBuilder::send`] pays and verifies.
pub struct RequestBuilder<'a> {
    client: &'a Client,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Vec<u8>,
    max_amount: Option<u128>,
}

struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

enum Expect {
    /// Check amount and units against the terms.
    Terms,
    /// A dispute: the amount must be the credit the body states, or zero.
    Credit,
}

fn header_value(text: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(text).map_err(|e| ClientError::Protocol(e.to_string()))
}

impl Client {
    /// Opens the mirror, discovers the terms, binds the session key and resyncs with the
    /// provider's log (which also resumes after either side crashed).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .tcp_nodelay(true)
            .build()?;
        let base = config.base_url.trim_end_matches('/').to_string();
        let terms = discover(&http, &base).await?;
        let mirror = Mirror::open(&config.data_dir, config.channel_id)?;
        let served = terms.terms.provider_key;
        let pinned = match config.provider_key {
            Some(k) => Some(k),
            None => match mirror.get_meta("provider_key")? {
                Some(b) => Some(
                    <[u8; 32]>::try_from(b.as_slice())
                        .ok()
                        .and_then(|b| PublicKey::from_bytes(&b).ok())
                        .ok_or_else(|| ClientError::Mirror("pinned provider key".into()))?,
                ),
                None => None,
            },
        };
        if let Some(p) = pinned {
            if p != served {
                return Err(Misbehavior::ProviderKeyChanged {
                    pinned: p.to_hex(),
                    served: served.to_hex(),
                }
                .into());
            }
        }
        mirror.put_meta("provider_key", &served.to_bytes())?;
        let guard = TermsGuard::open(&mirror, &terms, config.accept_terms_changes)?;
        let contract: Address = terms
            .terms
            .chain
            .contract
            .parse()
            .map_err(|e| ClientError::Protocol(format!("terms contract: {e}")))?;
        let lanes = config.lanes.min(terms.terms.max_lanes).max(1);
        let client = Client {
            lanes: LanePool::new(lanes, |_| None),
            in_flight: Default::default(),
            http,
            base,
            channel: config.channel_id,
            session_public: config.session_key.public(),
            session_key: Arc::new(config.session_key),
            checkpoint_key: Arc::new(config.checkpoint_key),
            retries: config.retries,
            timeout: config.timeout,
            state: Arc::new(Mutex::new(State {
                mirror,
                terms,
                guard,
                contract,
                stopped: None,
                checkpoint_due: false,
                salt: None,
                ahead: Default::default(),
                restores: 0,
            })),
        };
        client.bind_session().await?;
        {
            let mut st = client.state.lock().await;
            client.resync(&mut st).await?;
            let lanes = st.mirror.lanes();
            client.lanes.set_free(|lane| lanes.tail(lane).next_seq);
        }
        Ok(client)
    }

    fn channel_url(&self, tail: &str) -> String {
        format!(
            "{}{API_PREFIX}/channels/{}{tail}",
            self.base,
            self.channel.to_hex()
        )
    }

    /// The channel paid from.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// The session public key.
    pub fn session_key(&self) -> PublicKey {
        self.session_public
    }

    /// `(size, root, cumulative)` of the mirror.
    pub async fn mirror_head(&self) -> (u64, Hash, u128) {
        let st = self.state.lock().await;
        (st.mirror.size(), st.mirror.root(), st.mirror.cumulative())
    }

    /// Waits until every receipt verified so far is durable in the mirror. `send()` returns
    /// once the receipt is verified; its mirror append is group-committed in the background
    /// (spec/DESIGN-DECISIONS.md, "The client mirrors off the critical path").
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.state.lock().await.mirror.sync().await
    }

    /// The channel's request salt (spec/PROTOCOL.md §3.3), as the provider answered the
    /// binding: every request hash this client signs starts with it.
    pub async fn request_salt(&self) -> Option<RequestSalt> {
        self.state.lock().await.salt
    }

    /// What the served terms charge more (or credit less) than the accepted ones; while not
    /// empty, paid requests fail with [`ClientError::TermsRaised`] (spec/HTTP.md §4.4).
    pub async fn terms_raised(&self) -> Vec<tally_http::TermsIncrease> {
        self.state.lock().await.guard.raised().to_vec()
    }

    /// Accepts the terms served now, raises included: they become the accepted terms (kept
    /// in the mirror) and paying resumes.
    pub async fn accept_terms(&self) -> Result<(), ClientError> {
        let mut st = self.state.lock().await;
        let State {
            guard,
            mirror,
            terms,
            ..
        } = &mut *st;
        guard.accept(mirror, terms)
    }

    /// The misbehavior that stopped this client, if any.
    pub async fn stopped(&self) -> Option<Misbehavior> {
        self.state.lock().await.stopped.clone()
    }

    /// Starts a GET.
    pub fn get(&self, url: &str) -> RequestBuilder<'_> {
        self.request(Method::GET, url)
    }

    /// Starts a POST.
    pub fn post(&self, url: &str) -> RequestBuilder<'_> {
        self.request(Method::POST, url)
    }

    /// Starts a request with any method. `url` is a path (`/v1/x?y=1`) or an absolute URL
    /// under the base URL.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            method,
            url: url.to_string(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            max_amount: None,
        }
    }

    async fn bind_session(&self) -> Result<(), ClientError> {
        let (chain_id, contract) = {
            let st = self.state.lock().await;
            (st.terms.terms.chain.chain_id, st.contract)
        };
        let digest = tally_chain::eip712::session_digest(
            chain_id,
            contract,
            &self.channel,
            &self.session_public,
        );
        let sig = tally_chain::eip712::sign_digest(&self.checkpoint_key, &digest)
            .map_err(|e| ClientError::Signing(e.to_string()))?;
        let binding = SessionBinding {
            session_key: self.session_public,
            eip712: WireEip712Sig::from_parts(sig.parts()),
        };
        let resp = self
            .http
            .post(self.channel_url("/session"))
            .json_body(&binding)?
            .send()
            .await?;
        let bound: SessionBound = json_answer(resp).await?;
        if bound.bound != self.session_public {
            return Err(ClientError::Protocol(
                "the provider bound another session key".into(),
            ));
        }
        let mut st = self.state.lock().await;
        match st.mirror.get_meta(SALT_META)? {
            Some(kept) if kept.as_slice() != bound.request_salt.0.as_slice() => {
                return Err(ClientError::Protocol(
                    "the provider's request salt changed since this mirror bound the channel"
                        .into(),
                ))
            }
            Some(_) => {}
            None => st.mirror.put_meta(SALT_META, &bound.request_salt.0)?,
        }
        st.salt = Some(bound.request_salt);
        Ok(())
    }

    /// `TALLY-READ-AUTH` for a GET of `url` (spec/HTTP.md §5.1): the session key signs the
    /// channel, the method and the path and query exactly as sent, at this clock's time.
    fn read_token(&self, url: &str) -> Result<HeaderValue, ClientError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|e| ClientError::Protocol(format!("{url}: {e}")))?;
        let target = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let token = ReadToken::sign(&self.session_key, &self.channel, "GET", &target, now);
        header_value(&token.to_header())
    }

    /// GETs a channel read endpoint with a read token and reads the JSON answer.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
    ) -> Result<T, ClientError> {
        let token = self.read_token(&url)?;
        json_answer(self.http.get(url).header(READ_AUTH, token).send().await?).await
    }

    /// POSTs `value` as JSON to the channel endpoint `tail` and reads the JSON answer; a
    /// refusal is [`ClientError::Refused`].
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        tail: &str,
        value: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .post(self.channel_url(tail))
            .json_body(value)?
            .send()
            .await?;
        json_answer(resp).await
    }

    fn stop(st: &mut State, m: Misbehavior) -> ClientError {
        st.stopped = Some(m.clone());
        ClientError::Misbehavior(m)
    }

    /// Brings the mirror level with the provider's log: fetches and verifies records the
    /// provider holds beyond the mirror (each must carry this client's own signature and
    /// extend the mirror exactly), refuses a provider that lost records or forked, and
    /// fetches provider signatures the mirror lost in a crash.
    async fn resync(&self, st: &mut State) -> Result<(), ClientError> {
        st.mirror.sync().await?;
        let provider = st.terms.terms.provider_key;
        let theirs: ChannelState = self.get_json(self.channel_url("")).await?;
        if theirs.restore_required && theirs.size <= st.mirror.size() {
            // The provider lost promised records in a crash: upload ours (spec/HTTP.md §5.6).
            return Box::pin(self.restore(st)).await;
        }
        if theirs.size < st.mirror.size() {
            return Err(Self::stop(
                st,
                Misbehavior::LostRecords {
                    ours: st.mirror.size(),
                    theirs: theirs.size,
                },
            ));
        }
        let missing = st.mirror.missing_signatures()?;
        if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
            let page: RecordsPage = self
                .get_json(self.channel_url(&format!("/records?from={first}&to={}", last + 1)))
                .await?;
            for (k, wr) in page.records.iter().enumerate() {
                let index = first + k as u64;
                let ours = st.mirror.record(index)?;
                if ours
                    .verify_receipt(&provider, &wr.provider_signature)
                    .is_err()
                {
                    return Err(Self::stop(
                        st,
                        Misbehavior::BadRecord {
                            index,
                            why: "provider signature of a mirrored record".into(),
                        },
                    ));
                }
                st.mirror.put_signature(index, &wr.provider_signature)?;
            }
        }
        while st.mirror.size() < theirs.size {
            let from = st.mirror.size();
            let page: RecordsPage = self
                .get_json(self.channel_url(&format!("/records?from={from}&to={}", theirs.size)))
                .await?;
            if page.records.is_empty() {
                return Err(ClientError::Protocol(
                    "records endpoint returned nothing".into(),
                ));
            }
            for wr in &page.records {
                let index = st.mirror.size();
                let record = match wr.decode() {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(Self::stop(
                            st,
                            Misbehavior::BadRecord {
                                index,
                                why: e.to_string(),
                            },
                        ))
                    }
                };
                if let Err(m) = st.mirror.check_extends(
                    &record,
                    &wr.provider_signature,
                    &self.session_public,
                    &provider,
                ) {
                    return Err(Self::stop(st, m));
                }
                st.mirror
                    .append_pipelined(&record, wr.provider_signature)
                    .await?;
            }
        }
        st.mirror.sync().await?;
        if theirs.root != st.mirror.root() {
            return Err(Self::stop(
                st,
                Misbehavior::Fork {
                    size: theirs.size,
                    ours: st.mirror.root(),
                    theirs: theirs.root,
                },
            ));
        }
        // Receipts held for what was just fetched are dropped; later ones may now follow.
        self.drain_ahead(st).await
    }
}

impl RequestBuilder<'_> {
    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Authorizes at most `amount` for this call (never more than the route's maximum).
    pub fn max_amount(mut self, amount: u128) -> Self {
        self.max_amount = Some(amount);
        self
    }

    /// Sends, paying if the route is priced; returns once the receipt is verified and its
    /// record is queued to the mirror (durable at the mirror's next group commit; see
    /// [`Client::flush`]). A streamed answer is read whole first.
    pub async fn send(self) -> Result<PaidResponse, ClientError> {
        match self.dispatch(false).await? {
            paid::Answered::Whole(resp) => Ok(*resp),
            paid::Answered::Stream(_) => Err(ClientError::Protocol("unexpected stream".into())),
        }
    }

    /// Sends, paying if the route is priced, and hands the body over as it arrives
    /// ([`PaidStream::chunk`]); [`PaidStream::finish`] then verifies the receipt that came
    /// at the end of the stream (spec/HTTP.md §5.7). An answer that is not streamed comes
    /// through the same interface, in one chunk.
    pub async fn send_streaming(self) -> Result<PaidStream, ClientError> {
        Ok(match self.dispatch(true).await? {
            paid::Answered::Whole(resp) => PaidStream::whole(*resp),
            paid::Answered::Stream(s) => s,
        })
    }

    async fn dispatch(self, stream: bool) -> Result<paid::Answered, ClientError> {
        let c = self.client;
        let rest = if self.url.starts_with('/') {
            self.url.as_str()
        } else {
            self.url
                .strip_prefix(c.base.as_str())
                .filter(|r| r.starts_with('/'))
                .ok_or_else(|| ClientError::BadUrl(self.url.clone()))?
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let price = {
            let st = c.state.lock().await;
            st.terms.terms.price_for(self.method.as_str(), path).clone()
        };
        if price == Price::Free {
            let url = format!("{}{rest}", c.base);
            let raw = c
                .transmit(&self.method, &url, &self.headers, &self.body)
                .await?;
            return Ok(paid::Answered::Whole(Box::new(PaidResponse {
                exchange: DisputedExchange {
                    method: self.method.as_str().to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    request_body_hash: body_hash(&self.body),
                    status: raw.status.as_u16(),
                    response_body_hash: body_hash(&raw.body),
                },
                status: raw.status,
                headers: raw.headers,
                body: raw.body,
                receipt: None,
            })));
        }
        c.send_paid(
            self.method,
            path,
            query,
            self.headers,
            self.body,
            self.max_amount,
            Expect::Terms,
            stream,
        )
        .await
    }
}

/// The JSON body of a successful answer, or the refusal it carries.
pub(crate) async fn json_answer<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        return Err(refusal(&body));
    }
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
}

fn refusal(body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Refused {
            reason: e.error.reason,
            message: e.error.message,
        },
        Err(_) => ClientError::Protocol(format!(
            "unreadable error body: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// JSON bodies without reqwest's `json` feature (one serializer, serde_json, everywhere).
pub(crate) trait JsonBody: Sized {
    fn json_body<T: serde::Serialize>(self, value: &T) -> Result<Self, ClientError>;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body<T: serde::Serialize>(self, value: &T) -> Result<Self, ClientError> {
        let body = serde_json::to_vec(value).map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(self
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body))
    }
}
