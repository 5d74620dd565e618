/** spec/vectors/messages.json, byte for byte (spec/PROTOCOL.md §2–§7). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";

import { fromHex, toHex, utf8, toBase64, fromBase64 } from "../src/bytes.js";
import { ed25519Public, ed25519Sign, ed25519VerifyStrict } from "../src/crypto.js";
import {
  authorizationHash, checkRecordAlone, decodeAuthorization, decodeOutcome, decodeRecord, encodeAuthorization,
  encodeOutcome, encodeRecord, encodeRestore, leafHash, readTokenBytes, readTokenHeader, requestHash,
  responseHash, verifyOutcome, type Authorization, type Outcome,
} from "../src/messages.js";
import { Frontier, blake3Tree, rootOf, verifyInclusion } from "../src/merkle.js";
import { inclusionPath, verifyBundle } from "../src/bundle.js";
import { checkpointBody, parseCheckpointBody, signCheckpointNote, verifyNote } from "../src/checkpoint.js";
import { readJson, repoRoot } from "./repo.js";

const v = readJson(join(repoRoot(), "spec", "vectors", "messages.json"));
const clientSeed = fromHex(v.keys.client_seed);
const providerSeed = fromHex(v.keys.provider_seed);
const clientPub = fromHex(v.keys.client_public);
const providerPub = fromHex(v.keys.provider_public);

function authFromFields(f: any): Authorization {
  assert.equal(f.version, 2);
  return {
    channelId: fromHex(f.channel_id), lane: f.lane, seq: BigInt(f.seq), requestHash: fromHex(f.request_hash),
    maxAmount: BigInt(f.max_amount), ackSize: BigInt(f.ack_size), ackRoot: fromHex(f.ack_root),
    ackCumulative: BigInt(f.ack_cumulative), termsHash: fromHex(f.terms_hash),
  };
}

function outcomeFromFields(f: any): Outcome {
  assert.equal(f.version, 2);
  return {
    channelId: fromHex(f.channel_id), lane: f.lane, seq: BigInt(f.seq), index: BigInt(f.index),
    authorizationHash: fromHex(f.authorization_hash), units: (f.units as number[]).map((u) => BigInt(u)), amount: BigInt(f.amount),
    cumulative: BigInt(f.cumulative), responseHash: fromHex(f.response_hash), timeMs: BigInt(f.time_ms),
  };
}

test("keys: seeds give the published public keys", () => {
  assert.equal(toHex(ed25519Public(clientSeed)), v.keys.client_public);
  assert.equal(toHex(ed25519Public(providerSeed)), v.keys.provider_public);
});

test("authorization: encoding, signature, hash and decoding", () => {
  const a = authFromFields(v.authorization.fields);
  const bytes = encodeAuthorization(a);
  assert.equal(toHex(bytes), v.authorization.bytes);
  assert.equal(bytes.length, 20 + 181);
  const sig = ed25519Sign(clientSeed, bytes);
  assert.equal(toHex(sig), v.authorization.client_signature);
  assert.ok(ed25519VerifyStrict(clientPub, bytes, sig));
  assert.equal(toHex(authorizationHash(a, sig)), v.authorization.authorization_hash);
  assert.equal(toHex(encodeAuthorization(decodeAuthorization(bytes))), v.authorization.bytes);
});

test("outcome: encoding, provider signature and decoding", () => {
  const o = outcomeFromFields(v.outcome.fields);
  const bytes = encodeOutcome(o);
  assert.equal(toHex(bytes), v.outcome.bytes);
  assert.equal(toHex(ed25519Sign(providerSeed, bytes)), v.outcome.provider_signature);
  assert.ok(verifyOutcome(providerPub, o, fromHex(v.outcome.provider_signature)));
  assert.deepEqual(decodeOutcome(bytes), o);
});

test("negative amounts round-trip as two's-complement i128", () => {
  const o = { ...outcomeFromFields(v.outcome.fields), amount: -10n };
  const bytes = encodeOutcome(o);
  assert.equal(toHex(bytes.subarray(14 + 117, 14 + 133)), "f6" + "ff".repeat(15));
  assert.equal(decodeOutcome(bytes).amount, -10n);
});

test("request and response hashes", () => {
  const r = v.request;
  const h = requestHash(fromHex(r.request_salt), r.method, r.path, r.query, fromHex(r.body_hex));
  assert.equal(toHex(h), r.request_hash);
  assert.equal(toHex(responseHash(v.response.status, fromHex(v.response.body_hex))), v.response.response_hash);
});

test("records: decode, re-encode, leaf hashes, validity alone, provider signatures, log root", () => {
  const f = new Frontier();
  const leaves: Uint8Array[] = [];
  for (const [i, r] of v.records.entries()) {
    const bytes = fromHex(r.bytes);
    const rec = decodeRecord(bytes);
    assert.equal(toHex(encodeRecord(rec)), r.bytes);
    assert.equal(rec.outcome.index, BigInt(i));
    checkRecordAlone(rec, clientPub);
    assert.ok(verifyOutcome(providerPub, rec.outcome, fromHex(r.provider_signature)));
    const leaf = leafHash(bytes);
    assert.equal(toHex(leaf), r.leaf_hash);
    leaves.push(leaf);
    f.push(leaf);
  }
  assert.equal(toHex(f.root()), v.log.root);
  assert.equal(toHex(rootOf(blake3Tree, leaves)), v.log.root);
  assert.equal(f.size, BigInt(v.log.size));
  assert.equal(v.records[v.records.length - 1] && decodeRecord(fromHex(v.records[2].bytes)).outcome.cumulative, BigInt(v.log.cumulative));
});

test("negative decodings are refused", () => {
  assert.ok(v.negative_decodings.length >= 4);
  for (const n of v.negative_decodings) {
    assert.throws(() => decodeAuthorization(fromHex(n.bytes)), /not|version|prefix/, n.desc);
  }
});

test("negative signatures are refused by strict verification", () => {
  const bytes = fromHex(v.authorization.bytes);
  assert.ok(v.negative_signatures.length >= 2);
  for (const n of v.negative_signatures) {
    assert.equal(ed25519VerifyStrict(clientPub, bytes, fromHex(n.signature)), false, n.desc);
  }
});

test("strict verification refuses a small-order key and a small-order R", () => {
  const identity = fromHex("01" + "00".repeat(31));
  const msg = utf8("m");
  assert.equal(ed25519VerifyStrict(identity, msg, new Uint8Array(64)), false);
  const sig = ed25519Sign(clientSeed, msg);
  const smallR = new Uint8Array(sig);
  smallR.set(identity, 0);
  assert.equal(ed25519VerifyStrict(clientPub, msg, smallR), false);
});

test("checkpoint: body, client signature, provider cosignature", () => {
  const c = v.checkpoint;
  const parsed = parseCheckpointBody(c.body);
  assert.equal(checkpointBody(parsed), c.body);
  assert.equal(toHex(parsed.root), v.log.root);
  const clientOnly = signCheckpointNote(parsed, clientSeed, clientPub);
  assert.ok(c.note.startsWith(clientOnly), "the client's line matches byte for byte");
  const n = verifyNote(c.note, clientPub, providerPub, true);
  assert.ok(n.clientSigned);
  assert.equal(n.cosignTime, BigInt(c.cosign_time));
  const tampered = c.note.replace("cumulative 1000", "cumulative 1001");
  assert.throws(() => verifyNote(tampered, clientPub, providerPub, true));
  assert.throws(() => parseCheckpointBody(c.body.replace("\n3\n", "\n03\n")));
});

test("bundle: the record's inclusion in the checkpoint (§7.3 steps 1–7)", () => {
  const b = v.bundle;
  const rec = decodeRecord(fromHex(b.record));
  checkRecordAlone(rec, fromHex(b.client_key));
  assert.ok(verifyOutcome(fromHex(b.provider_key), rec.outcome, fromHex(b.provider_signature)));
  const note = verifyNote(b.checkpoint, fromHex(b.client_key), fromHex(b.provider_key), true);
  assert.equal(toHex(note.checkpoint.channelId), toHex(rec.authorization.channelId));
  assert.equal(rec.outcome.index, BigInt(b.index));
  const proof = b.inclusion_proof.map((p: string) => fromHex(p));
  assert.ok(verifyInclusion(blake3Tree, BigInt(b.index), note.checkpoint.size, leafHash(fromHex(b.record)), proof, note.checkpoint.root));
  assert.ok(!verifyInclusion(blake3Tree, BigInt(b.index) + 1n, note.checkpoint.size, leafHash(fromHex(b.record)), proof, note.checkpoint.root));
});

test("verifyBundle accepts the vector bundle, and refuses it with another index, proof or checkpoint", () => {
  const b = v.bundle;
  verifyBundle(b);
  assert.throws(() => verifyBundle({ ...b, index: b.index + 1 }), /6: index/);
  assert.throws(() => verifyBundle({ ...b, inclusion_proof: b.inclusion_proof.slice(1) }), /7: inclusion/);
  assert.throws(() => verifyBundle({ ...b, checkpoint: b.checkpoint.replace(/\u2014 tally-provider .*\n/, "") }), /cosignature/);
  assert.throws(() => verifyBundle({ ...b, extra: 1 }), /not a v2 proof bundle/);
  // The path the vector carries is the one the log gives.
  const leaves = v.records.map((r: any) => fromHex(r.leaf_hash));
  assert.deepEqual(inclusionPath(blake3Tree, leaves, b.index).map(toHex), b.inclusion_proof);
});

test("read token: bytes, signature and header", () => {
  const r = v.read_token;
  const bytes = readTokenBytes(fromHex(r.channel_id), r.method, r.target, BigInt(r.issued_at_ms));
  assert.equal(toHex(bytes), r.bytes);
  assert.equal(toHex(ed25519Sign(clientSeed, bytes)), r.signature);
  assert.equal(readTokenHeader(clientSeed, fromHex(r.channel_id), r.method, r.target, BigInt(r.issued_at_ms)), r.header);
});

test("restore statement: bytes and signature", () => {
  const f = v.restore.fields;
  const bytes = encodeRestore({
    channelId: fromHex(f.channel_id), nonce: fromHex(f.nonce), baseSize: BigInt(f.base_size),
    baseRoot: fromHex(f.base_root), size: BigInt(f.size), root: fromHex(f.root), cumulative: BigInt(f.cumulative),
    complete: f.complete,
  });
  assert.equal(toHex(bytes), v.restore.bytes);
  assert.equal(toHex(ed25519Sign(clientSeed, bytes)), v.restore.client_signature);
});

test("hex and base64 decoders refuse non-canonical spellings", () => {
  assert.throws(() => fromHex("AB"));
  assert.throws(() => fromHex("abc"));
  assert.throws(() => fromBase64("YQ"));
  assert.equal(toBase64(fromBase64("YQ==")), "YQ==");
});
