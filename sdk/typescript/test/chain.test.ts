/**
 * spec/vectors/chain.json, byte for byte (spec/CHAIN.md §1.1, §2.1, §3; spec/HTTP.md §5.2,
 * §12): domain separators, checkpoint/close/session digests, the derived EIP-3009 nonces, the
 * ReceiveWithAuthorization, Permit, Open and TopUp digests, every signature, and the relay
 * bodies exactly as the Rust types serialize them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";

import { fromHex, toHex, utf8 } from "../src/bytes.js";
import { keccak } from "../src/crypto.js";
import { checkpointDigest, closeDigest, domainSeparator, sessionDigest, structHash, u256 } from "../src/eip712.js";
import {
  type DepositDomains, type OpenParams, channelIdOf, gaslessChannelId, keyAddress, openIntentDigest, openNonce,
  permitDigest, receiveDigest, signGaslessOpen, signGaslessTopUp, signRelay, tokenSeparator, topUpIntentDigest,
  topUpNonce,
} from "../src/gasless.js";
import { readJson, repoRoot } from "./repo.js";

const v = readJson(join(repoRoot(), "spec", "vectors", "chain.json"));
const b = (h: string): Uint8Array => fromHex(h.replace(/^0x/, ""));
const h = (x: Uint8Array): string => `0x${toHex(x)}`;
const payerKey = b(v.keys.payer_key);
const signerKey = b(v.keys.signer_key);
const payeeKey = b(v.keys.payee_key);
const domains: DepositDomains = {
  chainId: v.tally_domain.chain_id,
  contract: v.tally_domain.verifying_contract,
  token: { name: v.token_domain.name, version: v.token_domain.version, address: v.token_domain.verifying_contract },
};
const params: OpenParams = {
  payee: v.open.payee, token: v.open.token, amount: BigInt(v.open.amount), signer: v.open.signer,
  withdrawDelay: v.open.withdraw_delay, salt: b(v.open.salt),
};
const channel = b(v.channel.channel_id);

/** A checksummed (mixed-case) spelling of an address: inputs in any case give the same bytes. */
function checksummed(addr: string): string {
  const lower = addr.slice(2).toLowerCase();
  const hash = toHex(keccak(utf8(lower)));
  return `0x${[...lower].map((c, i) => (parseInt(hash[i], 16) >= 8 ? c.toUpperCase() : c)).join("")}`;
}

test("keys and domain separators", () => {
  assert.equal(keyAddress(payerKey), v.keys.payer);
  assert.equal(keyAddress(signerKey), v.keys.signer);
  assert.equal(keyAddress(payeeKey), v.keys.payee);
  assert.equal(h(domainSeparator(domains.chainId, domains.contract)), v.tally_domain.separator);
  assert.equal(h(tokenSeparator(domains)), v.token_domain.separator);
  assert.equal(v.tally_domain.name, "tally");
  assert.equal(v.tally_domain.version, "1");
});

test("channel id (CHAIN.md §1.1), from any address spelling", () => {
  const c = v.channel;
  assert.equal(h(channelIdOf(c.chain_id, c.contract, c.payer, c.payee, c.token, b(c.salt))), c.channel_id);
  assert.equal(h(channelIdOf(BigInt(c.chain_id), checksummed(c.contract), checksummed(c.payer), checksummed(c.payee),
    checksummed(c.token), b(c.salt))), c.channel_id);
});

test("checkpoint, close and session-key digests and signatures", () => {
  const c = v.checkpoint;
  const cp = { channelId: b(c.channel_id), size: BigInt(c.size), root: b(c.root), cumulative: BigInt(c.cumulative) };
  const words = [cp.channelId, u256(cp.size), cp.root, u256(cp.cumulative)];
  assert.equal(h(structHash(c.checkpoint.type, ...words)), c.checkpoint.struct_hash);
  assert.equal(h(structHash(c.close.type, ...words)), c.close.struct_hash);
  assert.equal(h(checkpointDigest(domains.chainId, domains.contract, cp)), c.checkpoint.digest);
  assert.deepEqual(signRelay(signerKey, b(c.checkpoint.digest)), c.checkpoint.signature);
  assert.equal(h(closeDigest(domains.chainId, domains.contract, cp)), c.close.digest);
  assert.deepEqual(signRelay(signerKey, b(c.close.digest)), c.close.signature);
  assert.deepEqual(signRelay(payeeKey, b(c.close.digest)), c.close.payee_signature);
  const s = v.session_key;
  assert.equal(h(sessionDigest(domains.chainId, domains.contract, channel, b(s.session_key))), s.digest);
  assert.deepEqual(signRelay(signerKey, b(s.digest)), s.signature);
});

test("derived EIP-3009 nonces (CHAIN.md §2.1)", () => {
  assert.equal(h(keccak(utf8("tally.open"))), v.open.nonce_tag);
  assert.equal(h(keccak(utf8("tally.topUp"))), v.top_up.nonce_tag);
  assert.equal(h(openNonce(channel, v.open.signer, v.open.withdraw_delay)), v.open.nonce);
  assert.equal(h(topUpNonce(channel, b(v.top_up.salt))), v.top_up.nonce);
  // Every bound parameter moves the nonce.
  assert.notEqual(h(openNonce(channel, v.open.signer, v.open.withdraw_delay + 1)), v.open.nonce);
  assert.notEqual(h(openNonce(channel, v.open.payee, v.open.withdraw_delay)), v.open.nonce);
  assert.notEqual(h(topUpNonce(channel, b(v.open.salt))), v.top_up.nonce);
  assert.throws(() => openNonce(channel, v.open.signer, 2 ** 32));
});

test("gasless open: digests, signatures and relay bodies byte for byte", () => {
  const o = v.open;
  assert.equal(h(gaslessChannelId(domains, JSON.parse(o.eip3009.body))), o.channel_id);
  const e = o.eip3009;
  const rd = receiveDigest(domains, v.keys.payer, params.amount, e.valid_after, e.valid_before, b(o.nonce));
  assert.equal(h(rd), e.receive.digest);
  const open3009 = signGaslessOpen(payerKey, domains, params, { kind: "eip3009", validAfter: e.valid_after, validBefore: e.valid_before });
  assert.equal(JSON.stringify(open3009), e.body);
  const p = o.permit;
  assert.equal(h(permitDigest(domains, v.keys.payer, params.amount, BigInt(p.permit_nonce), p.deadline)), p.permit.digest);
  assert.equal(h(openIntentDigest(domains, params, p.deadline)), p.intent.digest);
  const openPermit = signGaslessOpen(payerKey, domains, params, { kind: "permit", permitNonce: BigInt(p.permit_nonce), deadline: p.deadline });
  assert.equal(JSON.stringify(openPermit), p.body);
  // Checksummed inputs give the wire's lower-case body.
  const mixed = { ...params, payee: checksummed(params.payee), token: checksummed(params.token), signer: checksummed(params.signer) };
  assert.equal(JSON.stringify(signGaslessOpen(payerKey, domains, mixed, { kind: "eip3009", validAfter: e.valid_after, validBefore: e.valid_before })), e.body);
});

test("gasless top-up past 2^64: digests, signatures and relay bodies byte for byte", () => {
  const t = v.top_up;
  const amount = BigInt(t.amount);
  assert.ok(amount > 2n ** 64n);
  const e = t.eip3009;
  assert.equal(h(receiveDigest(domains, t.from, amount, e.valid_after, e.valid_before, b(t.nonce))), e.receive.digest);
  const how3009 = { kind: "eip3009" as const, validAfter: e.valid_after, validBefore: e.valid_before };
  assert.equal(JSON.stringify(signGaslessTopUp(payerKey, domains, t.channel_id, amount, b(t.salt), how3009)), e.body);
  const p = t.permit;
  assert.equal(h(permitDigest(domains, t.from, amount, BigInt(p.permit_nonce), p.deadline)), p.permit.digest);
  assert.equal(h(topUpIntentDigest(domains, channel, amount, b(t.salt), p.deadline)), p.intent.digest);
  const howPermit = { kind: "permit" as const, permitNonce: BigInt(p.permit_nonce), deadline: p.deadline };
  assert.equal(JSON.stringify(signGaslessTopUp(payerKey, domains, channel, amount, b(t.salt), howPermit)), p.body);
});

test("every typed vector's struct hash and digest follow from its type and domain", () => {
  const tallySep = domainSeparator(domains.chainId, domains.contract);
  const tokenSep = tokenSeparator(domains);
  const cases: [any, Uint8Array][] = [
    [v.open.eip3009.receive, tokenSep], [v.open.permit.permit, tokenSep], [v.open.permit.intent, tallySep],
    [v.top_up.eip3009.receive, tokenSep], [v.top_up.permit.permit, tokenSep], [v.top_up.permit.intent, tallySep],
    [v.checkpoint.checkpoint, tallySep], [v.checkpoint.close, tallySep], [v.session_key, tallySep],
  ];
  for (const [c, sep] of cases) {
    assert.equal(h(keccak(Uint8Array.of(0x19, 0x01), sep, b(c.struct_hash))), c.digest, c.type);
  }
});

test("amounts and times out of range are refused before signing", () => {
  const how = { kind: "eip3009" as const, validAfter: 0, validBefore: 10 };
  assert.throws(() => signGaslessOpen(payerKey, domains, { ...params, amount: 0n }, how));
  assert.throws(() => signGaslessOpen(payerKey, domains, { ...params, amount: 1n << 128n }, how));
  assert.throws(() => signGaslessOpen(payerKey, domains, params, { ...how, validBefore: -1 }));
  assert.throws(() => signGaslessTopUp(payerKey, domains, channel, 1n, new Uint8Array(31), how));
  assert.throws(() => signGaslessOpen(payerKey, domains, { ...params, payee: "0x1234" }, how));
  assert.throws(() => signGaslessOpen(payerKey, domains, { ...params, withdrawDelay: 2 ** 32 }, { kind: "permit", permitNonce: 0n, deadline: 10 }));
});
