//! The digests a gasless deposit's signatures cover, signing them for a payer, and checking
//! them offline for a relay (spec/CHAIN.md §2.1, §3.5). The contract and the token check
//! them again onchain; checking here first lets a relay refuse a forgery before it spends an
//! RPC call or gas.

use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue};
use tally_core::ChannelId;

use super::{DepositAuth, DepositDomains, GaslessOpen, GaslessTopUp};
use crate::channel::{channel_id, OpenParams};
use crate::eip712::{self, sign_digest};
use crate::error::ChainError;

mod typed {
    alloy::sol! {
        struct ReceiveWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }
        struct Permit {
            address owner;
            address spender;
            uint256 value;
            uint256 nonce;
            uint256 deadline;
        }
        struct Open {
            address payee;
            address token;
            uint256 amount;
            address signer;
            uint32 withdrawDelay;
            bytes32 salt;
            uint256 deadline;
        }
        struct TopUp {
            bytes32 channelId;
            uint256 amount;
            bytes32 salt;
            uint256 deadline;
        }
    }
}

/// The EIP-3009 nonce `openWithAuthorization` requires (CHAIN.md §2.1):
/// `keccak256(abi.encode(keccak256("tally.open"), channelId, signer, uint32 withdrawDelay))`.
/// The authorization itself covers payer, token, amount and the contract; the channel id
/// covers payee and salt; the nonce adds signer and delay, so nothing is left open.
pub fn open_nonce(channel: &ChannelId, signer: Address, withdraw_delay: u32) -> B256 {
    let tag = keccak256("tally.open");
    keccak256((tag, B256::from(channel.0), signer, withdraw_delay).abi_encode())
}

/// The EIP-3009 nonce `topUpWithAuthorization` requires (CHAIN.md §2.1):
/// `keccak256(abi.encode(keccak256("tally.topUp"), channelId, salt))`.
pub fn top_up_nonce(channel: &ChannelId, salt: B256) -> B256 {
    let tag = keccak256("tally.topUp");
    keccak256((tag, B256::from(channel.0), salt).abi_encode())
}

impl DepositDomains {
    /// The Tally deployment's own domain (CHAIN.md §3.1).
    pub fn tally(&self) -> Eip712Domain {
        eip712::domain(self.chain_id, self.contract)
    }

    fn receive_digest(&self, from: Address, amount: u128, window: (u64, u64), nonce: B256) -> B256 {
        typed::ReceiveWithAuthorization {
            from,
            to: self.contract,
            value: U256::from(amount),
            validAfter: U256::from(window.0),
            validBefore: U256::from(window.1),
            nonce,
        }
        .eip712_signing_hash(&self.token)
    }

    fn permit_digest(&self, owner: Address, amount: u128, nonce: U256, deadline: u64) -> B256 {
        typed::Permit {
            owner,
            spender: self.contract,
            value: U256::from(amount),
            nonce,
            deadline: U256::from(deadline),
        }
        .eip712_signing_hash(&self.token)
    }
}

/// The Tally-domain `Open` intent digest of a permit open (CHAIN.md §3.5).
fn open_intent_digest(d: &DepositDomains, p: &OpenParams, deadline: u64) -> B256 {
    typed::Open {
        payee: p.payee,
        token: p.token,
        amount: U256::from(p.amount),
        signer: p.signer,
        withdrawDelay: p.withdraw_delay,
        salt: p.salt,
        deadline: U256::from(deadline),
    }
    .eip712_signing_hash(&d.tally())
}

/// The Tally-domain `TopUp` intent digest of a permit top-up (CHAIN.md §3.5).
fn top_up_intent_digest(
    d: &DepositDomains,
    channel: B256,
    amount: u128,
    salt: B256,
    deadline: u64,
) -> B256 {
    typed::TopUp {
        channelId: channel,
        amount: U256::from(amount),
        salt,
        deadline: U256::from(deadline),
    }
    .eip712_signing_hash(&d.tally())
}

impl GaslessOpen {
    /// The `open` arguments this request names (the payer aside).
    pub fn params(&self) -> OpenParams {
        OpenParams {
            payee: self.payee,
            token: self.token,
            amount: self.amount,
            signer: self.signer,
            withdraw_delay: self.withdraw_delay,
            salt: self.salt,
        }
    }

    /// The id the contract will give the channel.
    pub fn channel_id(&self, d: &DepositDomains) -> ChannelId {
        channel_id(
            d.chain_id, d.contract, self.payer, self.payee, self.token, self.salt,
        )
    }

    /// Signs an EIP-3009 open for `key`'s address, valid in the window `(after, before)`.
    pub fn sign_eip3009(
        key: &PrivateKeySigner,
        d: &DepositDomains,
        p: OpenParams,
        (after, before): (u64, u64),
    ) -> Result<Self, ChainError> {
        let payer = key.address();
        let id = channel_id(d.chain_id, d.contract, payer, p.payee, p.token, p.salt);
        let nonce = open_nonce(&id, p.signer, p.withdraw_delay);
        let digest = d.receive_digest(payer, p.amount, (after, before), nonce);
        let auth = DepositAuth::Eip3009 {
            valid_after: after,
            valid_before: before,
            sig: sign_digest(key, &digest)?,
        };
        Ok(Self::new(payer, p, auth))
    }

    /// Signs a permit open: the EIP-2612 permit for the payer's current permit nonce
    /// (`IERC20Authorizable::nonces`) and the Tally-domain `Open` intent.
    pub fn sign_permit(
        key: &PrivateKeySigner,
        d: &DepositDomains,
        p: OpenParams,
        permit_nonce: U256,
        deadline: u64,
    ) -> Result<Self, ChainError> {
        let payer = key.address();
        let permit = d.permit_digest(payer, p.amount, permit_nonce, deadline);
        let auth = DepositAuth::Permit {
            deadline,
            permit: sign_digest(key, &permit)?,
            intent: sign_digest(key, &open_intent_digest(d, &p, deadline))?,
        };
        Ok(Self::new(payer, p, auth))
    }

    fn new(payer: Address, p: OpenParams, auth: DepositAuth) -> Self {
        GaslessOpen {
            payer,
            payee: p.payee,
            token: p.token,
            amount: p.amount,
            signer: p.signer,
            withdraw_delay: p.withdraw_delay,
            salt: p.salt,
            auth,
        }
    }

    /// Checks offline, with the contract's signature rules, that the payer signed this
    /// request: the EIP-3009 signature, or the permit's intent signature (the permit itself
    /// needs the payer's permit nonce, which only the chain knows; submitting it checks it).
    pub fn verify(&self, d: &DepositDomains) -> Result<(), ChainError> {
        let nonce = open_nonce(&self.channel_id(d), self.signer, self.withdraw_delay);
        match self.auth {
            DepositAuth::Eip3009 {
                valid_after,
                valid_before,
                sig,
            } => sig.verify(
                &d.receive_digest(self.payer, self.amount, (valid_after, valid_before), nonce),
                self.payer,
            ),
            DepositAuth::Permit {
                deadline, intent, ..
            } => intent.verify(&open_intent_digest(d, &self.params(), deadline), self.payer),
        }
    }
}

impl GaslessTopUp {
    /// The channel, as tally-core names it.
    pub fn channel(&self) -> ChannelId {
        ChannelId(self.channel_id.0)
    }

    /// Signs an EIP-3009 top-up of `channel` by `amount` from `key`'s address.
    pub fn sign_eip3009(
        key: &PrivateKeySigner,
        d: &DepositDomains,
        channel: &ChannelId,
        amount: u128,
        salt: B256,
        (after, before): (u64, u64),
    ) -> Result<Self, ChainError> {
        let nonce = top_up_nonce(channel, salt);
        let digest = d.receive_digest(key.address(), amount, (after, before), nonce);
        Ok(GaslessTopUp {
            channel_id: B256::from(channel.0),
            from: key.address(),
            amount,
            salt,
            auth: DepositAuth::Eip3009 {
                valid_after: after,
                valid_before: before,
                sig: sign_digest(key, &digest)?,
            },
        })
    }

    /// Signs a permit top-up (EIP-2612 permit for `permit_nonce`, and the `TopUp` intent).
    pub fn sign_permit(
        key: &PrivateKeySigner,
        d: &DepositDomains,
        channel: &ChannelId,
        (amount, salt): (u128, B256),
        permit_nonce: U256,
        deadline: u64,
    ) -> Result<Self, ChainError> {
        let channel_id = B256::from(channel.0);
        let permit = d.permit_digest(key.address(), amount, permit_nonce, deadline);
        let intent = top_up_intent_digest(d, channel_id, amount, salt, deadline);
        Ok(GaslessTopUp {
            channel_id,
            from: key.address(),
            amount,
            salt,
            auth: DepositAuth::Permit {
                deadline,
                permit: sign_digest(key, &permit)?,
                intent: sign_digest(key, &intent)?,
            },
        })
    }

    /// Checks offline that `from` signed this top-up (as [`GaslessOpen::verify`]).
    pub fn verify(&self, d: &DepositDomains) -> Result<(), ChainError> {
        match self.auth {
            DepositAuth::Eip3009 {
                valid_after,
                valid_before,
                sig,
            } => {
                let nonce = top_up_nonce(&self.channel(), self.salt);
                let digest =
                    d.receive_digest(self.from, self.amount, (valid_after, valid_before), nonce);
                sig.verify(&digest, self.from)
            }
            DepositAuth::Permit {
                deadline, intent, ..
            } => {
                let digest =
                    top_up_intent_digest(d, self.channel_id, self.amount, self.salt, deadline);
                intent.verify(&digest, self.from)
            }
        }
    }
}
