/**
 * Gasless deposits (spec/CHAIN.md §2.1, §3.5; spec/HTTP.md §12): a payer holding the token
 * and no ETH signs an open or a top-up, and the provider's relay submits it and pays the gas.
 *
 * Two token authorizations, as crates/tally-chain/src/gasless does them:
 * - EIP-3009 `ReceiveWithAuthorization` in the token's domain, `to` = the Tally contract,
 *   with the nonce the contract derives from the channel ({@link openNonce},
 *   {@link topUpNonce}), so nothing the payer signed can be pointed elsewhere;
 * - EIP-2612 `Permit` (spender = the contract) plus a Tally-domain `Open` / `TopUp` intent
 *   naming every parameter.
 *
 * The bodies built here are the relay's JSON byte for byte as the Rust types serialize them
 * (spec/vectors/chain.json checks it): lower-case `0x` hex, amounts as decimal strings.
 */
import { TallyError, fromHex, toHex, utf8 } from "./bytes.js";
import { ethAddress, keccak, secpSignDigest } from "./crypto.js";
import { addressWord, domainSeparator, domainSeparatorOf, structHash, typedDigest, u256 } from "./eip712.js";

/** The EIP-712 domain a token signs its authorizations in (its `name()` and `version()`). */
export interface TokenDomain {
  name: string;
  version: string;
  /** The token contract (its `verifyingContract`). */
  address: string;
}

/** The two domains a gasless deposit is signed in: the Tally deployment's and the token's. */
export interface DepositDomains {
  chainId: bigint | number;
  /** The Tally contract: the EIP-3009 `to`, the permit's spender. */
  contract: string;
  token: TokenDomain;
}

/** An EIP-712 signature in the relay's form: `{v: 27|28, r: "0x…", s: "0x…"}`, low-s. */
export interface RelaySig {
  v: number;
  r: string;
  s: string;
}

/** How the payer authorized the token movement (HTTP.md §12.1 `auth`). */
export type DepositAuth =
  | { kind: "eip3009"; valid_after: number; valid_before: number; sig: RelaySig }
  | { kind: "permit"; deadline: number; permit: RelaySig; intent: RelaySig };

/** The body of `POST /tally/v1/relay/open`, members in the wire's order. */
export interface GaslessOpen {
  payer: string;
  payee: string;
  token: string;
  amount: string;
  signer: string;
  withdraw_delay: number;
  salt: string;
  auth: DepositAuth;
}

/** The body of `POST /tally/v1/relay/topup`, members in the wire's order. */
export interface GaslessTopUp {
  channel_id: string;
  from: string;
  amount: string;
  salt: string;
  auth: DepositAuth;
}

/** The arguments of an open (the payer aside, who is the signing key). */
export interface OpenParams {
  /** Who gets paid (the provider's `pay_to`). */
  payee: string;
  /** The deposit's ERC-20 (the terms' `asset`). */
  token: string;
  /** The deposit in base units. */
  amount: bigint;
  /** The payer's checkpoint key's address. */
  signer: string;
  /** Seconds of the exit delay (uint32). */
  withdrawDelay: number;
  /** 32 bytes making the channel id unique. */
  salt: Uint8Array;
}

/** Which authorization to sign: EIP-3009 for a window, or a permit for the token's current permit nonce. */
export type AuthChoice =
  | { kind: "eip3009"; validAfter: number; validBefore: number }
  | { kind: "permit"; permitNonce: bigint; deadline: number };

const RECEIVE_TYPE =
  "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";
const PERMIT_TYPE = "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)";
const OPEN_TYPE =
  "Open(address payee,address token,uint256 amount,address signer,uint32 withdrawDelay,bytes32 salt,uint256 deadline)";
const TOP_UP_TYPE = "TopUp(bytes32 channelId,uint256 amount,bytes32 salt,uint256 deadline)";
const U128_MAX = (1n << 128n) - 1n;

/** A `0x` address in the wire's spelling (lower case); any case is accepted. */
export function wireAddress(addr: string): string {
  return `0x${toHex(addressWord(addr).subarray(12))}`;
}

const hex0x = (b: Uint8Array): string => `0x${toHex(b)}`;

function bytes32(what: string, v: Uint8Array | string): Uint8Array {
  if (typeof v !== "string") {
    if (v.length !== 32) throw new TallyError(`${what} must be 32 bytes`);
    return v;
  }
  return fromHex(v.replace(/^0x/, "").toLowerCase(), 32);
}

function amountOf(v: bigint): bigint {
  if (v < 1n || v > U128_MAX) throw new TallyError(`amount ${v} is not in 1..2^128-1`);
  return v;
}

function uint32(v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TallyError(`withdraw delay ${v} is not a uint32`);
  return v;
}

function seconds(what: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new TallyError(`${what} must be unix seconds, got ${v}`);
  return v;
}

/** CHAIN.md §1.1: `keccak256(abi.encode(chainId, contract, payer, payee, token, salt))`. */
export function channelIdOf(chainId: bigint | number, contract: string, payer: string, payee: string, token: string, salt: Uint8Array): Uint8Array {
  return keccak(u256(chainId), addressWord(contract), addressWord(payer), addressWord(payee), addressWord(token), bytes32("salt", salt));
}

/** CHAIN.md §2.1: `keccak256(abi.encode(keccak256("tally.open"), channelId, signer, uint32 withdrawDelay))`. */
export function openNonce(channelId: Uint8Array, signer: string, withdrawDelay: number): Uint8Array {
  return keccak(keccak(utf8("tally.open")), bytes32("channel id", channelId), addressWord(signer), u256(uint32(withdrawDelay)));
}

/** CHAIN.md §2.1: `keccak256(abi.encode(keccak256("tally.topUp"), channelId, salt))`. */
export function topUpNonce(channelId: Uint8Array, salt: Uint8Array): Uint8Array {
  return keccak(keccak(utf8("tally.topUp")), bytes32("channel id", channelId), bytes32("salt", salt));
}

/** The token's domain separator (its name, version, the chain id and its address, §2.1). */
export function tokenSeparator(d: DepositDomains): Uint8Array {
  return domainSeparatorOf(d.token.name, d.token.version, d.chainId, d.token.address);
}

/** The EIP-3009 `ReceiveWithAuthorization` digest (token domain, `to` = the contract). */
export function receiveDigest(d: DepositDomains, from: string, amount: bigint, validAfter: number, validBefore: number, nonce: Uint8Array): Uint8Array {
  const hash = structHash(RECEIVE_TYPE, addressWord(from), addressWord(d.contract), u256(amountOf(amount)),
    u256(seconds("valid_after", validAfter)), u256(seconds("valid_before", validBefore)), bytes32("nonce", nonce));
  return typedDigest(tokenSeparator(d), hash);
}

/** The EIP-2612 `Permit` digest (token domain, spender = the contract, value = the amount). */
export function permitDigest(d: DepositDomains, owner: string, amount: bigint, permitNonce: bigint, deadline: number): Uint8Array {
  const hash = structHash(PERMIT_TYPE, addressWord(owner), addressWord(d.contract), u256(amountOf(amount)),
    u256(permitNonce), u256(seconds("deadline", deadline)));
  return typedDigest(tokenSeparator(d), hash);
}

/** The Tally-domain `Open` intent of a permit open (CHAIN.md §3.5). */
export function openIntentDigest(d: DepositDomains, p: OpenParams, deadline: number): Uint8Array {
  const hash = structHash(OPEN_TYPE, addressWord(p.payee), addressWord(p.token), u256(amountOf(p.amount)),
    addressWord(p.signer), u256(uint32(p.withdrawDelay)), bytes32("salt", p.salt), u256(seconds("deadline", deadline)));
  return typedDigest(domainSeparator(d.chainId, d.contract), hash);
}

/** The Tally-domain `TopUp` intent of a permit top-up (CHAIN.md §3.5). */
export function topUpIntentDigest(d: DepositDomains, channelId: Uint8Array, amount: bigint, salt: Uint8Array, deadline: number): Uint8Array {
  const hash = structHash(TOP_UP_TYPE, bytes32("channel id", channelId), u256(amountOf(amount)), bytes32("salt", salt),
    u256(seconds("deadline", deadline)));
  return typedDigest(domainSeparator(d.chainId, d.contract), hash);
}

/** Signs a digest in the relay's form (RFC 6979, low-s, v 27/28). */
export function signRelay(key: Uint8Array, digest: Uint8Array): RelaySig {
  const { v, r, s } = secpSignDigest(key, digest);
  return { v, r: hex0x(r), s: hex0x(s) };
}

/** The address of a secp256k1 key, in the wire's spelling. */
export const keyAddress = (key: Uint8Array): string => hex0x(ethAddress(key));

/**
 * Signs a gasless open for `key`'s address (the payer): the EIP-3009 authorization over the
 * derived nonce, or the permit for the payer's current permit nonce (`nonces(payer)` on the
 * token) and the `Open` intent. The result is the relay's body.
 */
export function signGaslessOpen(key: Uint8Array, d: DepositDomains, p: OpenParams, how: AuthChoice): GaslessOpen {
  const payer = keyAddress(key);
  const amount = amountOf(p.amount);
  let auth: DepositAuth;
  if (how.kind === "eip3009") {
    const channel = channelIdOf(d.chainId, d.contract, payer, p.payee, p.token, p.salt);
    const nonce = openNonce(channel, p.signer, p.withdrawDelay);
    const digest = receiveDigest(d, payer, amount, how.validAfter, how.validBefore, nonce);
    auth = { kind: "eip3009", valid_after: how.validAfter, valid_before: how.validBefore, sig: signRelay(key, digest) };
  } else {
    const permit = signRelay(key, permitDigest(d, payer, amount, how.permitNonce, how.deadline));
    auth = { kind: "permit", deadline: how.deadline, permit, intent: signRelay(key, openIntentDigest(d, p, how.deadline)) };
  }
  return {
    payer, payee: wireAddress(p.payee), token: wireAddress(p.token), amount: amount.toString(),
    signer: wireAddress(p.signer), withdraw_delay: uint32(p.withdrawDelay), salt: hex0x(bytes32("salt", p.salt)), auth,
  };
}

/**
 * Signs a gasless top-up of `channelId` by `amount` from `key`'s address; `salt` must be
 * fresh per top-up (32 random bytes): it makes the authorization single-use (CHAIN.md §2.1).
 */
export function signGaslessTopUp(key: Uint8Array, d: DepositDomains, channelId: Uint8Array | string, amount: bigint, salt: Uint8Array, how: AuthChoice): GaslessTopUp {
  const from = keyAddress(key);
  const channel = bytes32("channel id", channelId);
  amountOf(amount);
  let auth: DepositAuth;
  if (how.kind === "eip3009") {
    const digest = receiveDigest(d, from, amount, how.validAfter, how.validBefore, topUpNonce(channel, salt));
    auth = { kind: "eip3009", valid_after: how.validAfter, valid_before: how.validBefore, sig: signRelay(key, digest) };
  } else {
    const permit = signRelay(key, permitDigest(d, from, amount, how.permitNonce, how.deadline));
    const intent = signRelay(key, topUpIntentDigest(d, channel, amount, salt, how.deadline));
    auth = { kind: "permit", deadline: how.deadline, permit, intent };
  }
  return { channel_id: hex0x(channel), from, amount: amount.toString(), salt: hex0x(bytes32("salt", salt)), auth };
}

/** The channel a signed open creates, for the domains it was signed in. */
export function gaslessChannelId(d: DepositDomains, open: GaslessOpen): Uint8Array {
  return channelIdOf(d.chainId, d.contract, open.payer, open.payee, open.token, bytes32("salt", open.salt));
}

/** 32 random bytes (a salt). */
export function randomSalt(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(32));
}
