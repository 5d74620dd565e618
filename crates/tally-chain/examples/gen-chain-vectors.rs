//! Writes spec/vectors/chain.json: the EIP-712 digests, EIP-3009 nonces, signatures and relay
//! bodies of spec/CHAIN.md §1.1, §2.1, §3 and spec/HTTP.md §5.2 and §12, under fixed keys.
//!
//! Every digest and nonce is computed here a second way, by hand from the spec's formulas
//! (type strings, `abi.encode` words, `0x1901`), and checked against the crate: the same
//! RFC 6979 signature over both (for the private digests of `gasless::sign`), or equality
//! (for the public ones). A difference is an error, so the file can only hold values both
//! readings agree on.
//!
//! Run: `cargo run -p tally-chain --example gen-chain-vectors`. The test `chain_vectors.rs`
//! calls [`generate`] and fails if the committed file differs.

use std::path::{Path, PathBuf};

use alloy::hex;
use alloy::primitives::{address, keccak256, Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolValue};
use serde_json::{json, Value};
use tally_chain::eip712::{self, sign_digest, Eip712Sig};
use tally_chain::gasless::{open_nonce, top_up_nonce};
use tally_chain::{
    channel_id, ChainError, DepositAuth, DepositDomains, GaslessOpen, GaslessTopUp, OpenParams,
};
use tally_core::{ChannelId, Checkpoint, Hash, SecretKey};

/// The payer's key: it holds the tokens and signs the deposit authorizations.
pub const PAYER_KEY: [u8; 32] = [0x0a; 32];
/// The channel's checkpoint signer's key.
pub const SIGNER_KEY: [u8; 32] = [0x0b; 32];
/// The payee's key (it cosigns the Close vector).
pub const PAYEE_KEY: [u8; 32] = [0x0c; 32];
/// The seed of the ed25519 session key bound in the SessionKey vector (messages.json's client).
pub const SESSION_SEED: [u8; 32] = [0x01; 32];
/// The chain id of every vector.
pub const CHAIN_ID: u64 = 8453;
/// The Tally deployment the vectors are signed for.
pub const CONTRACT: Address = address!("0x5a1e9d3c7b2f4e6a8c0d1b3f5e7a9c2d4f6b8e01");
/// The token (its EIP-712 domain: "USD Coin", version "2").
pub const TOKEN: Address = address!("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48");

const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
const CHECKPOINT_TYPE: &str =
    "Checkpoint(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)";
const CLOSE_TYPE: &str = "Close(bytes32 channelId,uint64 size,bytes32 root,uint256 cumulative)";
const RECEIVE_TYPE: &str = "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";
const PERMIT_TYPE: &str =
    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)";
const OPEN_TYPE: &str = "Open(address payee,address token,uint256 amount,address signer,uint32 withdrawDelay,bytes32 salt,uint256 deadline)";
const TOP_UP_TYPE: &str = "TopUp(bytes32 channelId,uint256 amount,bytes32 salt,uint256 deadline)";

/// The EIP-3009 validity window of both EIP-3009 vectors.
const WINDOW: (u64, u64) = (1_800_000_000, 1_800_003_600);
/// The permit deadline of both permit vectors.
const DEADLINE: u64 = 1_800_003_600;

/// A failure of the generator: a key, or two readings of the spec that disagree.
#[derive(Debug)]
pub struct GenError(pub String);

impl From<ChainError> for GenError {
    fn from(e: ChainError) -> Self {
        GenError(e.to_string())
    }
}

fn key(bytes: [u8; 32]) -> Result<PrivateKeySigner, GenError> {
    PrivateKeySigner::from_slice(&bytes).map_err(|e| GenError(e.to_string()))
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, a: T, b: T) -> Result<(), GenError> {
    if a == b {
        Ok(())
    } else {
        Err(GenError(format!("{what}: {a:?} != {b:?}")))
    }
}

/// `keccak256(typeHash || words)`: a struct hash from its `abi.encode`d members.
fn struct_hash(type_str: &str, words: &[B256]) -> B256 {
    let mut data = keccak256(type_str).to_vec();
    for w in words {
        data.extend_from_slice(w.as_slice());
    }
    keccak256(data)
}

/// `keccak256(0x1901 || domainSeparator || structHash)` (CHAIN.md §3.2).
fn typed_digest(separator: B256, hash: B256) -> B256 {
    let mut data = vec![0x19, 0x01];
    data.extend_from_slice(separator.as_slice());
    data.extend_from_slice(hash.as_slice());
    keccak256(data)
}

fn word_u(v: u128) -> B256 {
    B256::from(U256::from(v))
}

fn word_a(a: Address) -> B256 {
    a.into_word()
}

/// A domain separator by hand (CHAIN.md §3.1), checked against alloy's.
fn separator(d: &Eip712Domain) -> Result<B256, GenError> {
    let name = d.name.as_deref().unwrap_or_default();
    let version = d.version.as_deref().unwrap_or_default();
    let chain = d.chain_id.unwrap_or_default();
    let contract = d.verifying_contract.unwrap_or_default();
    let words = [
        keccak256(name),
        keccak256(version),
        B256::from(chain),
        word_a(contract),
    ];
    let sep = struct_hash(DOMAIN_TYPE, &words);
    same("domain separator", sep, d.separator())?;
    Ok(sep)
}

fn domain_json(d: &Eip712Domain) -> Result<Value, GenError> {
    Ok(json!({
        "name": d.name.as_deref().unwrap_or_default(),
        "version": d.version.as_deref().unwrap_or_default(),
        "chain_id": CHAIN_ID,
        "verifying_contract": d.verifying_contract.unwrap_or_default(),
        "separator": separator(d)?,
    }))
}

/// One typed-data vector: its type, struct hash, digest and the signature `key` makes.
fn typed(
    type_str: &str,
    sep: B256,
    words: &[B256],
    key: &PrivateKeySigner,
) -> Result<(Value, B256, Eip712Sig), GenError> {
    let hash = struct_hash(type_str, words);
    let digest = typed_digest(sep, hash);
    let sig = sign_digest(key, &digest)?;
    sig.verify(&digest, key.address())?;
    let v = json!({ "type": type_str, "struct_hash": hash, "digest": digest, "signature": sig });
    Ok((v, digest, sig))
}

/// Every vector, as the contents of spec/vectors/chain.json.
pub fn generate() -> Result<String, GenError> {
    let (payer, signer, payee) = (key(PAYER_KEY)?, key(SIGNER_KEY)?, key(PAYEE_KEY)?);
    let token = Eip712Domain::new(
        Some("USD Coin".into()),
        Some("2".into()),
        Some(U256::from(CHAIN_ID)),
        Some(TOKEN),
        None,
    );
    let d = DepositDomains {
        chain_id: CHAIN_ID,
        contract: CONTRACT,
        token,
    };
    let params = OpenParams {
        payee: payee.address(),
        token: TOKEN,
        amount: 25_000_000,
        signer: signer.address(),
        withdraw_delay: 86_400,
        salt: B256::repeat_byte(0x5a),
    };
    let channel = channel_id(
        CHAIN_ID,
        CONTRACT,
        payer.address(),
        params.payee,
        TOKEN,
        params.salt,
    );
    let v = json!({
        "description": "tally EIP-712 chain vectors (spec/CHAIN.md §1.1, §2.1, §3; spec/HTTP.md §5.2, §12). Generated by `cargo run -p tally-chain --example gen-chain-vectors`. Keys and digests are 0x hex; `body` is the relay request exactly as serialized.",
        "keys": {
            "payer_key": hex::encode_prefixed(PAYER_KEY),
            "payer": payer.address(),
            "signer_key": hex::encode_prefixed(SIGNER_KEY),
            "signer": signer.address(),
            "payee_key": hex::encode_prefixed(PAYEE_KEY),
            "payee": payee.address(),
        },
        "tally_domain": domain_json(&d.tally())?,
        "token_domain": domain_json(&d.token)?,
        "channel": channel_json(&params, payer.address(), channel)?,
        "checkpoint": checkpoint_json(&d, channel, &signer, &payee)?,
        "session_key": session_json(channel)?,
        "open": open_json(&d, &payer, params, channel)?,
        "top_up": top_up_json(&d, &payer, channel)?,
    });
    let mut s = serde_json::to_string_pretty(&v).map_err(|e| GenError(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// CHAIN.md §1.1: `keccak256(abi.encode(chainId, contract, payer, payee, token, salt))`.
fn channel_json(p: &OpenParams, payer: Address, id: ChannelId) -> Result<Value, GenError> {
    let words = (
        U256::from(CHAIN_ID),
        CONTRACT,
        payer,
        p.payee,
        p.token,
        p.salt,
    )
        .abi_encode();
    same("channel id", keccak256(words), B256::from(id.0))?;
    Ok(json!({
        "chain_id": CHAIN_ID, "contract": CONTRACT, "payer": payer, "payee": p.payee,
        "token": p.token, "salt": p.salt, "channel_id": B256::from(id.0),
    }))
}

/// CHAIN.md §3.2 and §3.3: a checkpoint of the channel, its Checkpoint digest signed by the
/// checkpoint signer, its Close digest signed by the signer and the payee.
fn checkpoint_json(
    d: &DepositDomains,
    channel: ChannelId,
    signer: &PrivateKeySigner,
    payee: &PrivateKeySigner,
) -> Result<Value, GenError> {
    let cp = Checkpoint {
        channel_id: channel,
        size: 3,
        root: Hash([0x5e; 32]),
        cumulative: 1_234_567,
    };
    let sep = separator(&d.tally())?;
    let words = [
        B256::from(channel.0),
        B256::from(U256::from(cp.size)),
        B256::from(cp.root.0),
        word_u(cp.cumulative),
    ];
    let (checkpoint, digest, sig) = typed(CHECKPOINT_TYPE, sep, &words, signer)?;
    same(
        "checkpoint digest",
        digest,
        eip712::checkpoint_digest(&d.tally(), &cp),
    )?;
    let crate_sig = tally_chain::ChainCheckpoint::sign(signer, &d.tally(), cp)?.sig;
    same("checkpoint signature", sig, crate_sig)?;
    let (mut close, digest, signer_sig) = typed(CLOSE_TYPE, sep, &words, signer)?;
    same(
        "close digest",
        digest,
        eip712::close_digest(&d.tally(), &cp),
    )?;
    same(
        "close signature",
        signer_sig,
        eip712::sign_close(signer, &d.tally(), &cp)?,
    )?;
    close["payee_signature"] = json!(eip712::sign_close(payee, &d.tally(), &cp)?);
    Ok(json!({
        "channel_id": B256::from(channel.0),
        "size": cp.size,
        "root": B256::from(cp.root.0),
        "cumulative": cp.cumulative.to_string(),
        "checkpoint": checkpoint,
        "close": close,
    }))
}

/// HTTP.md §5.2: the checkpoint key's SessionKey binding (signature by the signer key).
fn session_json(channel: ChannelId) -> Result<Value, GenError> {
    let session = SecretKey::from_seed(&SESSION_SEED).public();
    let sep = domain_sep_tally()?;
    let words = [B256::from(channel.0), B256::from(session.to_bytes())];
    let (v, digest, _) = typed(eip712::SESSION_KEY_TYPE, sep, &words, &key(SIGNER_KEY)?)?;
    let want = eip712::session_digest(CHAIN_ID, CONTRACT, &channel, &session);
    same("session digest", digest, want)?;
    let mut v = v;
    v["session_key"] = json!(hex::encode_prefixed(session.to_bytes()));
    Ok(v)
}

fn domain_sep_tally() -> Result<B256, GenError> {
    separator(&eip712::domain(CHAIN_ID, CONTRACT))
}

/// `abi.encode` of a ReceiveWithAuthorization to the contract.
fn receive_words(from: Address, amount: u128, nonce: B256) -> [B256; 6] {
    [
        word_a(from),
        word_a(CONTRACT),
        word_u(amount),
        word_u(WINDOW.0.into()),
        word_u(WINDOW.1.into()),
        nonce,
    ]
}

fn permit_words(owner: Address, amount: u128, nonce: u128) -> [B256; 5] {
    [
        word_a(owner),
        word_a(CONTRACT),
        word_u(amount),
        word_u(nonce),
        word_u(DEADLINE.into()),
    ]
}

fn body<T: serde::Serialize>(v: &T) -> Result<String, GenError> {
    serde_json::to_string(v).map_err(|e| GenError(e.to_string()))
}

/// The EIP-3009 path's signature, checked against the one the crate put in `auth`.
fn eip3009_json(
    d: &DepositDomains,
    key: &PrivateKeySigner,
    (amount, nonce): (u128, B256),
    auth: &DepositAuth,
    body: String,
) -> Result<Value, GenError> {
    let words = receive_words(key.address(), amount, nonce);
    let (receive, _, sig) = typed(RECEIVE_TYPE, separator(&d.token)?, &words, key)?;
    let want = DepositAuth::Eip3009 {
        valid_after: WINDOW.0,
        valid_before: WINDOW.1,
        sig,
    };
    same("eip3009 auth", &want, auth)?;
    Ok(json!({
        "valid_after": WINDOW.0, "valid_before": WINDOW.1, "receive": receive, "body": body,
    }))
}

/// The permit path's two signatures, checked against those the crate put in `auth`.
fn permit_json(
    d: &DepositDomains,
    key: &PrivateKeySigner,
    (amount, permit_nonce): (u128, u128),
    intent: (&str, &[B256]),
    auth: &DepositAuth,
) -> Result<Value, GenError> {
    let token_sep = separator(&d.token)?;
    let words = permit_words(key.address(), amount, permit_nonce);
    let (permit_v, _, permit_sig) = typed(PERMIT_TYPE, token_sep, &words, key)?;
    let (intent_v, _, intent_sig) = typed(intent.0, separator(&d.tally())?, intent.1, key)?;
    let want = DepositAuth::Permit {
        deadline: DEADLINE,
        permit: permit_sig,
        intent: intent_sig,
    };
    same("permit auth", &want, auth)?;
    Ok(json!({
        "permit_nonce": permit_nonce.to_string(),
        "deadline": DEADLINE,
        "permit": permit_v,
        "intent": intent_v,
    }))
}

/// CHAIN.md §2.1 open: the derived nonce, the EIP-3009 and the permit path, and their bodies.
fn open_json(
    d: &DepositDomains,
    payer: &PrivateKeySigner,
    p: OpenParams,
    channel: ChannelId,
) -> Result<Value, GenError> {
    let tag = keccak256("tally.open");
    let nonce_words = (tag, B256::from(channel.0), p.signer, p.withdraw_delay).abi_encode();
    let nonce = keccak256(nonce_words);
    same(
        "open nonce",
        nonce,
        open_nonce(&channel, p.signer, p.withdraw_delay),
    )?;

    let signed = GaslessOpen::sign_eip3009(payer, d, p, WINDOW)?;
    signed.verify(d)?;
    let eip3009 = eip3009_json(d, payer, (p.amount, nonce), &signed.auth, body(&signed)?)?;

    let permit_nonce = 0u128;
    let signed = GaslessOpen::sign_permit(payer, d, p, U256::from(permit_nonce), DEADLINE)?;
    signed.verify(d)?;
    let intent = [
        word_a(p.payee),
        word_a(p.token),
        word_u(p.amount),
        word_a(p.signer),
        B256::from(U256::from(p.withdraw_delay)),
        p.salt,
        word_u(DEADLINE.into()),
    ];
    let mut permit = permit_json(
        d,
        payer,
        (p.amount, permit_nonce),
        (OPEN_TYPE, &intent),
        &signed.auth,
    )?;
    permit["body"] = json!(body(&signed)?);
    Ok(json!({
        "payee": p.payee, "token": p.token, "amount": p.amount.to_string(), "signer": p.signer,
        "withdraw_delay": p.withdraw_delay, "salt": p.salt, "channel_id": B256::from(channel.0),
        "nonce_tag": tag, "nonce": nonce, "eip3009": eip3009, "permit": permit,
    }))
}

/// CHAIN.md §2.1 top-up of the channel by more than 2^64 base units (amounts past a JSON
/// number's precision): the derived nonce, both paths and their bodies.
fn top_up_json(
    d: &DepositDomains,
    from: &PrivateKeySigner,
    channel: ChannelId,
) -> Result<Value, GenError> {
    let amount: u128 = 1_000_000_000_000_000_000_000_007;
    let salt = B256::repeat_byte(0x70);
    let tag = keccak256("tally.topUp");
    let nonce = keccak256((tag, B256::from(channel.0), salt).abi_encode());
    same("top-up nonce", nonce, top_up_nonce(&channel, salt))?;

    let signed = GaslessTopUp::sign_eip3009(from, d, &channel, amount, salt, WINDOW)?;
    signed.verify(d)?;
    let eip3009 = eip3009_json(d, from, (amount, nonce), &signed.auth, body(&signed)?)?;

    let permit_nonce = 1u128;
    let signed = GaslessTopUp::sign_permit(
        from,
        d,
        &channel,
        (amount, salt),
        U256::from(permit_nonce),
        DEADLINE,
    )?;
    signed.verify(d)?;
    let intent = [
        B256::from(channel.0),
        word_u(amount),
        salt,
        word_u(DEADLINE.into()),
    ];
    let mut permit = permit_json(
        d,
        from,
        (amount, permit_nonce),
        (TOP_UP_TYPE, &intent),
        &signed.auth,
    )?;
    permit["body"] = json!(body(&signed)?);
    Ok(json!({
        "channel_id": B256::from(channel.0), "from": from.address(),
        "amount": amount.to_string(), "salt": salt, "nonce_tag": tag, "nonce": nonce,
        "eip3009": eip3009, "permit": permit,
    }))
}

/// spec/vectors/, from this crate's directory.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = generate().map_err(|e| e.0)?;
    let path = vectors_dir().join("chain.json");
    std::fs::write(&path, text)?;
    println!("wrote {}", path.display());
    Ok(())
}
