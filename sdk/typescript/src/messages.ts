/**
 * The signed and hashed messages of spec/PROTOCOL.md §2–§5: authorization (§5.1), outcome
 * (§5.2), record (§5.3), request/response hashes (§3.3), terms hash (HTTP.md §4.2), read
 * token (§5.6) and restore statement (§5.7). Every body is bincode 1.3.3 fixint
 * little-endian (§2.2): fields in table order, no padding, version byte 2.
 */
import {
  TallyError, concat, equal, fromHex, i128LE, readI128LE, readUintLE, toHex, uintLE, utf8,
} from "./bytes.js";
import { H, ed25519Sign, ed25519VerifyStrict } from "./crypto.js";

export const VERSION = 2;
export const PREFIX = {
  authorization: utf8("tally\0authorization\0"),
  outcome: utf8("tally\0outcome\0"),
  record: utf8("tally\0record\0"),
  request: utf8("tally\0request\0"),
  response: utf8("tally\0response\0"),
  terms: utf8("tally\0terms\0"),
  read: utf8("tally\0read\0"),
  restore: utf8("tally\0restore\0"),
};
export const AUTH_BODY = 181;
export const OUTCOME_BODY = 189;
export const RECORD_BODY = 435;
/** Meters per route, and counts per outcome (§5.2 `units`). */
export const METERS = 4;
/** One count per meter, in the route's meter order (§5.2). */
export type Units = bigint[];
/** A fixed price's units: one call (§5.2). */
export const ONE_CALL = (): Units => [1n, 0n, 0n, 0n];
export const NO_UNITS = (): Units => [0n, 0n, 0n, 0n];
export const MAX_LANES = 1024;
export const ACK_WINDOW = 65536n;

/** §5.1. Hashes are 32 raw bytes; integers are bigint. */
export interface Authorization {
  channelId: Uint8Array;
  lane: number;
  seq: bigint;
  requestHash: Uint8Array;
  maxAmount: bigint;
  ackSize: bigint;
  ackRoot: Uint8Array;
  ackCumulative: bigint;
  termsHash: Uint8Array;
}

/** §5.2. */
export interface Outcome {
  channelId: Uint8Array;
  lane: number;
  seq: bigint;
  index: bigint;
  authorizationHash: Uint8Array;
  /** §5.2: 4 counts, one per meter of the route. */
  units: Units;
  amount: bigint;
  cumulative: bigint;
  responseHash: Uint8Array;
  timeMs: bigint;
}

/** §5.3: an authorization, the client's signature and the outcome. */
export interface LogRecord {
  authorization: Authorization;
  clientSignature: Uint8Array;
  outcome: Outcome;
}

function b32(b: Uint8Array, what: string): Uint8Array {
  if (b.length !== 32) throw new TallyError(`${what}: ${b.length} bytes, not 32`);
  return b;
}

function authBody(a: Authorization): Uint8Array {
  return concat(
    Uint8Array.of(VERSION), b32(a.channelId, "channel_id"), uintLE(a.lane, 4), uintLE(a.seq, 8),
    b32(a.requestHash, "request_hash"), uintLE(a.maxAmount, 16), uintLE(a.ackSize, 8),
    b32(a.ackRoot, "ack_root"), uintLE(a.ackCumulative, 16), b32(a.termsHash, "terms_hash"),
  );
}

function unitsLE(u: Units): Uint8Array {
  if (u.length !== METERS) throw new TallyError(`units: ${u.length} counts, not ${METERS}`);
  return concat(...u.map((x) => uintLE(x, 8)));
}

function outcomeBody(o: Outcome): Uint8Array {
  return concat(
    Uint8Array.of(VERSION), b32(o.channelId, "channel_id"), uintLE(o.lane, 4), uintLE(o.seq, 8),
    uintLE(o.index, 8), b32(o.authorizationHash, "authorization_hash"), unitsLE(o.units),
    i128LE(o.amount), uintLE(o.cumulative, 16), b32(o.responseHash, "response_hash"), uintLE(o.timeMs, 8),
  );
}

export const encodeAuthorization = (a: Authorization): Uint8Array => concat(PREFIX.authorization, authBody(a));
export const encodeOutcome = (o: Outcome): Uint8Array => concat(PREFIX.outcome, outcomeBody(o));
export const encodeRecord = (r: LogRecord): Uint8Array =>
  concat(PREFIX.record, Uint8Array.of(VERSION), authBody(r.authorization), r.clientSignature, outcomeBody(r.outcome));

/** §2.3 rules 1–3: prefix, exact length, version; returns the body. */
function body(bytes: Uint8Array, prefix: Uint8Array, len: number, what: string): Uint8Array {
  if (bytes.length < prefix.length || !equal(bytes.subarray(0, prefix.length), prefix)) {
    throw new TallyError(`${what}: wrong prefix`);
  }
  const b = bytes.subarray(prefix.length);
  if (b.length !== len) throw new TallyError(`${what}: body of ${b.length} bytes, not ${len}`);
  if (b[0] !== VERSION) throw new TallyError(`${what}: version ${b[0]} is not ${VERSION}`);
  return b;
}

function readAuth(b: Uint8Array, at: number): Authorization {
  return {
    channelId: b.slice(at + 1, at + 33),
    lane: Number(readUintLE(b, at + 33, 4)),
    seq: readUintLE(b, at + 37, 8),
    requestHash: b.slice(at + 45, at + 77),
    maxAmount: readUintLE(b, at + 77, 16),
    ackSize: readUintLE(b, at + 93, 8),
    ackRoot: b.slice(at + 101, at + 133),
    ackCumulative: readUintLE(b, at + 133, 16),
    termsHash: b.slice(at + 149, at + 181),
  };
}

function readOutcome(b: Uint8Array, at: number): Outcome {
  return {
    channelId: b.slice(at + 1, at + 33),
    lane: Number(readUintLE(b, at + 33, 4)),
    seq: readUintLE(b, at + 37, 8),
    index: readUintLE(b, at + 45, 8),
    authorizationHash: b.slice(at + 53, at + 85),
    units: [0, 1, 2, 3].map((i) => readUintLE(b, at + 85 + 8 * i, 8)),
    amount: readI128LE(b, at + 117),
    cumulative: readUintLE(b, at + 133, 16),
    responseHash: b.slice(at + 149, at + 181),
    timeMs: readUintLE(b, at + 181, 8),
  };
}

/** §2.3 rule 4: the decoded value must re-encode to exactly the input. */
function reencodes(bytes: Uint8Array, again: Uint8Array, what: string): void {
  if (!equal(bytes, again)) throw new TallyError(`${what}: not canonical`);
}

export function decodeAuthorization(bytes: Uint8Array): Authorization {
  const a = readAuth(body(bytes, PREFIX.authorization, AUTH_BODY, "authorization"), 0);
  reencodes(bytes, encodeAuthorization(a), "authorization");
  return a;
}

export function decodeOutcome(bytes: Uint8Array): Outcome {
  const o = readOutcome(body(bytes, PREFIX.outcome, OUTCOME_BODY, "outcome"), 0);
  reencodes(bytes, encodeOutcome(o), "outcome");
  return o;
}

export function decodeRecord(bytes: Uint8Array): LogRecord {
  const b = body(bytes, PREFIX.record, RECORD_BODY, "record");
  if (b[1] !== VERSION || b[246] !== VERSION) throw new TallyError("record: nested version is not 2");
  const r = { authorization: readAuth(b, 1), clientSignature: b.slice(182, 246), outcome: readOutcome(b, 246) };
  reencodes(bytes, encodeRecord(r), "record");
  return r;
}

export const signAuthorization = (seed: Uint8Array, a: Authorization): Uint8Array =>
  ed25519Sign(seed, encodeAuthorization(a));

/** §5.1: `H(prefix || body || client_signature)`. */
export const authorizationHash = (a: Authorization, sig: Uint8Array): Uint8Array =>
  H(encodeAuthorization(a), sig);

/** §3.2: the leaf hash `H(0x00 || record_bytes)`. */
export const leafHash = (recordBytes: Uint8Array): Uint8Array => H(Uint8Array.of(0), recordBytes);

/** §3.3 request hash, salted with the channel's request salt. */
export function requestHash(salt: Uint8Array, method: string, path: string, query: string, bodyBytes: Uint8Array): Uint8Array {
  const m = utf8(method), p = utf8(path), q = utf8(query);
  return H(
    PREFIX.request, b32(salt, "request salt"), uintLE(m.length, 8), m, uintLE(p.length, 8), p,
    uintLE(q.length, 8), q, H(bodyBytes),
  );
}

/** §3.3 response hash (not salted). */
export const responseHash = (status: number, bodyBytes: Uint8Array): Uint8Array =>
  H(PREFIX.response, uintLE(status, 2), H(bodyBytes));

/** spec/HTTP.md §4.2: over the exact bytes served, never a re-serialization. */
export const termsHash = (served: Uint8Array): Uint8Array => H(PREFIX.terms, served);

/** §5.6 read token bytes. */
export function readTokenBytes(channelId: Uint8Array, method: string, target: string, issuedAtMs: bigint): Uint8Array {
  const m = utf8(method), t = utf8(target);
  return concat(PREFIX.read, b32(channelId, "channel_id"), uintLE(m.length, 8), m, uintLE(t.length, 8), t, uintLE(issuedAtMs, 8));
}

/** `TALLY-READ-AUTH` header value: `<issued_at_ms>.<signature hex>` (HTTP.md §5.1). */
export function readTokenHeader(seed: Uint8Array, channelId: Uint8Array, method: string, target: string, issuedAtMs: bigint): string {
  return `${issuedAtMs}.${toHex(ed25519Sign(seed, readTokenBytes(channelId, method, target, issuedAtMs)))}`;
}

/** §5.7 restore statement. */
export interface Restore {
  channelId: Uint8Array;
  nonce: Uint8Array;
  baseSize: bigint;
  baseRoot: Uint8Array;
  size: bigint;
  root: Uint8Array;
  cumulative: bigint;
  complete: boolean;
}

export const encodeRestore = (r: Restore): Uint8Array =>
  concat(
    PREFIX.restore, Uint8Array.of(VERSION), b32(r.channelId, "channel_id"), b32(r.nonce, "nonce"),
    uintLE(r.baseSize, 8), b32(r.baseRoot, "base_root"), uintLE(r.size, 8), b32(r.root, "root"),
    uintLE(r.cumulative, 16), Uint8Array.of(r.complete ? 1 : 0),
  );

/**
 * R1–R4 and R6 of §5.3: the record is valid on its own under the session key. Throws with
 * the rule that failed.
 */
export function checkRecordAlone(r: LogRecord, sessionKey: Uint8Array): void {
  const a = r.authorization, o = r.outcome;
  if (!equal(a.channelId, o.channelId)) throw new TallyError("R1: channel ids differ");
  if (a.lane !== o.lane || a.seq !== o.seq) throw new TallyError("R2: lane or seq differ");
  if (!equal(o.authorizationHash, authorizationHash(a, r.clientSignature))) throw new TallyError("R3: authorization hash");
  if (o.amount > a.maxAmount) throw new TallyError("R4: amount above max_amount");
  if (!ed25519VerifyStrict(sessionKey, encodeAuthorization(a), r.clientSignature)) {
    throw new TallyError("R6: client signature");
  }
}

export const verifyOutcome = (providerKey: Uint8Array, o: Outcome, sig: Uint8Array): boolean =>
  ed25519VerifyStrict(providerKey, encodeOutcome(o), sig);

export { fromHex, toHex };
