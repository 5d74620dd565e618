// The page's own check of one record, following the proof-bundle rules of spec/PROTOCOL.md
// §7.3, steps 1–7, with public keys only. Layouts are spec/PROTOCOL.md §5.1–§5.3 and §6;
// the Merkle tree is RFC 9162's with BLAKE3 (§3.2), the inclusion check RFC 9162 §2.1.3.2.
import { blake3 } from '@noble/hashes/blake3.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ed25519 } from '@noble/curves/ed25519.js';

const enc = new TextEncoder();
const PREFIX = {
  authorization: enc.encode('tally\0authorization\0'),
  outcome: enc.encode('tally\0outcome\0'),
  record: enc.encode('tally\0record\0'),
};
const VERSION = 2;
const AUTH = 181; // authorization body
const OUTCOME = 189; // outcome body
const RECORD = PREFIX.record.length + 1 + AUTH + 64 + OUTCOME; // 448

export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
export const unhex = (s) => Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, k) => x === b[k]);
const le = (b, at, len) => {
  let v = 0n;
  for (let k = len - 1; k >= 0; k--) v = (v << 8n) | BigInt(b[at + k]);
  return v;
};
const signedLe = (b, at, len) => {
  const v = le(b, at, len);
  return v >= 1n << BigInt(8 * len - 1) ? v - (1n << BigInt(8 * len)) : v;
};
// RFC 8032 verification, refusing non-canonical encodings (spec/PROTOCOL.md §4.1).
const edVerify = (sig, msg, key) => {
  try { return ed25519.verify(sig, msg, key, { zip215: false }); } catch { return false; }
};

/** Decodes a record's bytes (spec/PROTOCOL.md §5.3, rules of §2.3), or throws why not. */
export function decodeRecord(bytes) {
  if (!equal(bytes.subarray(0, PREFIX.record.length), PREFIX.record)) throw new Error('not a record: wrong prefix');
  if (bytes.length !== RECORD) throw new Error(`a record is ${RECORD} bytes, this is ${bytes.length}`);
  const p = PREFIX.record.length;
  const a = bytes.subarray(p + 1, p + 1 + AUTH);
  const clientSig = bytes.subarray(p + 1 + AUTH, p + 1 + AUTH + 64);
  const o = bytes.subarray(p + 1 + AUTH + 64);
  if (bytes[p] !== VERSION || a[0] !== VERSION || o[0] !== VERSION) throw new Error('not a version 2 record');
  return {
    auth: a, clientSig, outcome: o,
    channel: hex(a.subarray(1, 33)), lane: Number(le(a, 33, 4)), seq: le(a, 37, 8),
    requestHash: hex(a.subarray(45, 77)), maxAmount: le(a, 77, 16),
    ackSize: le(a, 93, 8), ackRoot: hex(a.subarray(101, 133)), ackCumulative: le(a, 133, 16),
    termsHash: hex(a.subarray(149, 181)),
    outChannel: hex(o.subarray(1, 33)), outLane: Number(le(o, 33, 4)), outSeq: le(o, 37, 8),
    index: le(o, 45, 8), authHash: o.subarray(53, 85),
    units: [0, 1, 2, 3].map((m) => le(o, 85 + 8 * m, 8)),
    amount: signedLe(o, 117, 16), cumulative: le(o, 133, 16),
    responseHash: hex(o.subarray(149, 181)), timeMs: le(o, 181, 8),
  };
}

// Standard base64, canonical only: atob ignores the unused bits of the last character, so a
// changed character could decode to the same bytes; re-encoding must give back the text, as
// the Rust decoder requires.
const b64 = (s) => {
  const raw = atob(s);
  if (btoa(raw) !== s) throw new Error('non-canonical base64 in the note');
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
};
const keyId = (name, type, key) => sha256(concat(enc.encode(name + '\n'), Uint8Array.of(type), key)).subarray(0, 4);

/** Checks a signed checkpoint note (spec/PROTOCOL.md §6) under both keys; returns its values. */
export function verifyNote(note, clientKey, providerKey) {
  const end = note.indexOf('\n\n');
  if (end < 0 || note.length > 8192) throw new Error('not a signed note');
  const body = note.slice(0, end + 1);
  const lines = body.split('\n');
  const m = [/^tally\/channel\/([0-9a-f]{64})$/, /^(0|[1-9][0-9]*)$/, /^([A-Za-z0-9+/]{43}=)$/, /^cumulative (0|[1-9][0-9]*)$/]
    .map((re, k) => re.exec(lines[k]));
  if (lines.length !== 5 || m.some((x) => !x)) throw new Error('the checkpoint body is not the four lines of §6.1');
  const cp = { channel: m[0][1], size: BigInt(m[1][1]), root: b64(m[2][1]), cumulative: BigInt(m[3][1]) };
  const bodyBytes = enc.encode(body);
  let client = false;
  let provider = false;
  for (const line of note.slice(end + 2).split('\n').filter((l) => l)) {
    const sig = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
    if (!sig) throw new Error('a signature line is malformed');
    const blob = b64(sig[2]);
    if (sig[1] === 'tally-client' && blob.length === 68 && equal(blob.subarray(0, 4), keyId('tally-client', 1, clientKey))) {
      if (!edVerify(blob.subarray(4), bodyBytes, clientKey)) throw new Error("the client's checkpoint signature is invalid");
      client = true;
    } else if (sig[1] === 'tally-provider' && blob.length === 76 && equal(blob.subarray(0, 4), keyId('tally-provider', 4, providerKey))) {
      const t = le(blob.slice(4, 12).reverse(), 0, 8);
      const msg = enc.encode(`cosignature/v1\ntime ${t}\n${body}`);
      if (!edVerify(blob.subarray(12), msg, providerKey)) throw new Error("the provider's cosignature is invalid");
      provider = true;
    }
  }
  if (!client) throw new Error("the checkpoint lacks the client's signature");
  if (!provider) throw new Error("the checkpoint lacks the provider's cosignature");
  return cp;
}

const node = (l, r) => blake3(concat(Uint8Array.of(1), l, r));

/** The exact inclusion proof length of spec/PROTOCOL.md §7.1. */
export function proofLength(index, size) {
  const i = BigInt(index);
  const n = BigInt(size);
  const inner = (i ^ (n - 1n)).toString(2).replace(/^0+/, '').length;
  const border = (i >> BigInt(inner)).toString(2).split('').filter((c) => c === '1').length;
  return inner + border;
}

/** RFC 9162 §2.1.3.2: whether `leaf` at `index` of a tree of `size` has root `root`. */
export function verifyInclusion(index, size, leaf, proof, root) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn > sn || proof.length !== proofLength(index, size)) return false;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = node(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = node(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

/**
 * Runs steps 1–7 of spec/PROTOCOL.md §7.3 on one entry of the bill's evidence. Returns the
 * decoded record (if it decodes) and each step's outcome: { name, ok, why }.
 */
export function checkEntry(entry, ctx) {
  const steps = [];
  const step = (name, f) => {
    if (steps.some((s) => !s.ok)) { steps.push({ name, ok: false, why: 'not reached' }); return; }
    try {
      const why = f();
      steps.push({ name, ok: why === true, why: why === true ? '' : String(why) });
    } catch (e) { steps.push({ name, ok: false, why: e.message }); }
  };
  let r = null;
  step('the record decodes', () => { r = decodeRecord(entry.record); return true; });
  step("the record is valid on its own and the client signed it", () => {
    if (r.outChannel !== r.channel) return 'R1: the outcome names another channel';
    if (r.outLane !== r.lane || r.outSeq !== r.seq) return 'R2: the outcome names another lane or seq';
    const authHash = blake3(concat(PREFIX.authorization, r.auth, r.clientSig));
    if (!equal(authHash, r.authHash)) return 'R3: the outcome answers another authorization';
    if (r.amount > r.maxAmount) return 'R4: the amount exceeds what the client authorized';
    if (!edVerify(r.clientSig, concat(PREFIX.authorization, r.auth), ctx.clientKey)) return "R6: the client's signature does not verify";
    return true;
  });
  step("the provider signed the outcome", () =>
    edVerify(entry.signature, concat(PREFIX.outcome, r.outcome), ctx.providerKey) || "the provider's signature does not verify");
  step('the checkpoint is signed by both parties', () => { if (ctx.checkpointError) return ctx.checkpointError; return ctx.checkpoint ? true : 'the bill has no checkpoint'; });
  step("the record and the checkpoint are this bill's channel", () => {
    if (r.channel !== ctx.channel) return `the record is for channel ${r.channel}`;
    return ctx.checkpoint.channel === ctx.channel || 'the checkpoint names another channel';
  });
  step("the record's index is its place in the log", () => r.index === BigInt(entry.index) || `the record says index ${r.index}`);
  step('the record is in the checkpoint\u2019s tree', () => {
    if (entry.proof === null) return `the record is past the checkpoint (size ${ctx.checkpoint.size})`;
    const leaf = blake3(concat(Uint8Array.of(0), entry.record));
    return verifyInclusion(entry.index, ctx.checkpoint.size, leaf, entry.proof, ctx.checkpoint.root) ||
      'the inclusion proof does not reach the checkpoint\u2019s root';
  });
  return { record: r, steps, ok: steps.every((s) => s.ok) };
}
