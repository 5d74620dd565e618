/**
 * Paying for one request (spec/PROTOCOL.md §5, HTTP.md §9), as crates/tally-client's
 * `send_paid`: lease a lane, sign under the mirror's head, send without holding the lock (so
 * many requests are in flight), verify the receipt, put the record in its place, and resolve
 * refusals (`stale_seq`, `state_mismatch`, `checkpoint_required`, `terms_changed`,
 * `lane_busy`, `already_recorded`, `requirements_mismatch` of a copied `accepted`) before
 * trying again; any other refusal, such as `insufficient_funds`, is returned as a
 * `RefusedError` with its fields. A streamed answer (an event stream, its receipt in a final
 * event) is handed over as a `PaidStream` as crates/tally-client's `send_streaming` does.
 */
import { TallyError, concat, equal, fromHex, parseAmount, toHex } from "./bytes.js";
import { H } from "./crypto.js";
import type { TallyClient } from "./client.js";
import { ResponseLostError, refusal } from "./errors.js";
import { restoreLocked } from "./restore.js";
import type { Lease } from "./lanes.js";
import {
  type Authorization, type LogRecord, type Outcome, authorizationHash, decodeRecord, requestHash,
  signAuthorization, verifyOutcome,
} from "./messages.js";
import { wireRecord } from "./mirror.js";
import { type Price, expectedCharge, priceFor, priceMax } from "./terms.js";
import { type Units } from "./messages.js";
import { BodyHasher, BROKEN, type FinalEvent, FinalEventSplitter, fetchReceipt, recordedBroken, responseHashWithBodyHash, streamed } from "./stream.js";
import { UsageReader } from "./usage.js";
import { encodeHeader, parsePaymentResponse, paymentPayload, requirementsFor, type PaymentPayload } from "./wire.js";

/**
 * The authorization the next attempt of `req` would sign now (its lane's next seq, the
 * mirror's head), without leasing: what the official x402 client's `createPaymentPayload`
 * returns. The transport signs again when it sends, on the lane it leases (ed25519 is
 * deterministic, so the bytes are the same when nothing moved in between).
 */
export function previewPayload(c: TallyClient, req: PaidRequest): { authorization: string; signature: string } {
  c.checkPay();
  if (!c.salt) throw new TallyError("no request salt: the key is not bound");
  const reqHash = requestHash(c.salt, req.method, req.path, req.query, req.body);
  const slot = c.lanes.peek(toHex(reqHash));
  const lane = slot?.lane ?? 0;
  const seq = slot?.unanswered?.request === toHex(reqHash) ? slot.unanswered.seq : slot?.nextSeq ?? c.mirror.nextSeq(lane);
  const price = priceFor(c.terms.terms, req.method, req.path);
  const routeMax = priceMax(price) ?? 0n;
  const head = c.mirror.head();
  const auth: Authorization = {
    channelId: c.channel, lane, seq, requestHash: reqHash, maxAmount: req.maxAmount !== undefined && req.maxAmount < routeMax ? req.maxAmount : routeMax,
    ackSize: head.size, ackRoot: head.root, ackCumulative: head.cumulative, termsHash: c.terms.hash,
  };
  return paymentPayload(requirementsFor(c.terms, price), auth, signAuthorization(c.sessionSeed, auth)).payload;
}

/**
 * A verified receipt: the outcome, the provider's signature and the full record; `payer` is
 * the channel's payer as `PAYMENT-RESPONSE` states it (informative, HTTP.md §3.3).
 */
export interface Receipt { outcome: Outcome; signature: Uint8Array; record: LogRecord; payer?: string }
/** The preimages of a record's request and response hashes, kept for a dispute (HTTP.md §7). */
export interface Exchange { method: string; path: string; query: string; request_body_hash: string; status: number; response_body_hash: string }
export type TallyResponse = Response & { receipt?: Receipt; exchange?: Exchange };

export interface PaidRequest {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  body: Uint8Array;
  maxAmount?: bigint;
  /**
   * A PaymentPayload built by the official x402 client (its `accepted`, `resource` and
   * `extensions` are kept; `payload` is signed here). `accepted` is used while it names the
   * terms served now; after `terms_changed` it is rebuilt from the new terms.
   */
  template?: Partial<PaymentPayload>;
  /** A dispute (HTTP.md §7): priced at 0, and the receipt must carry the credit the body states. */
  credit?: boolean;
}

interface Sent {
  /** `accepted` came from the caller's template (the official x402 client), not the terms. */
  templated: boolean;
  auth: Authorization; sig: Uint8Array; max: bigint; price: Price; provider: Uint8Array; chargeServerErrors: boolean; sentCheckpoint: boolean;
  /** The client's restore count when this attempt was signed. */
  restores: number;
  credit: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Statuses whose `Response` may not carry a body. */
const NULL_BODY = new Set([101, 204, 205, 304]);

export async function sendPaid(c: TallyClient, req: PaidRequest): Promise<TallyResponse> {
  const out = await attemptPaid(c, req, false);
  if (out instanceof PaidStream) throw new TallyError("unreachable: a buffered call got a stream");
  return out;
}

/**
 * Pays for a request whose answer may be streamed (HTTP.md, streamed paid responses): an
 * event-stream answer is handed over as it arrives (`PaidStream`), its receipt verified by
 * `finish()`; any other answer is read whole and comes already verified.
 */
export async function sendPaidStream(c: TallyClient, req: PaidRequest): Promise<PaidStream> {
  const out = await attemptPaid(c, req, true);
  return out instanceof PaidStream ? out : PaidStream.whole(out);
}

async function attemptPaid(c: TallyClient, req: PaidRequest, stream: boolean): Promise<TallyResponse | PaidStream> {
  if (!c.salt) throw new TallyError("no request salt: the key is not bound");
  const reqHash = requestHash(c.salt, req.method, req.path, req.query, req.body);
  const key = toHex(reqHash);
  const lease = await c.lanes.lease(key);
  let handedOver = false;
  try {
    if (lease.slot.unanswered?.request === key) lease.slot.nextSeq = lease.slot.unanswered.seq;
    const busyUntil = Date.now() + c.timeoutMs;
    let busyWaits = 0;
    for (let attempt = 1; attempt <= 6; attempt++) {
      const [sent, headers] = await c.lock.run(() => signAttempt(c, lease, req, reqHash));
      lease.slot.nextSeq = null;
      const url = `${c.base}${req.path}${req.query ? `?${req.query}` : ""}`;
      let resp: Response, body: Uint8Array;
      c.inFlight++;
      // The timeout covers the answer's head; a stream's body may take as long as it takes.
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(new TallyError("timed out")), c.timeoutMs);
      try {
        resp = await c.http(url, { method: req.method, headers, body: req.body.length ? (req.body as BodyInit) : undefined, signal: abort.signal });
        if (streamed(resp.headers)) {
          clearTimeout(timer);
          const live = new PaidStream(resp.status, resp.headers, { c, lease, key, sent, req, resp });
          handedOver = true;
          if (stream) return live;
          return await live.readWhole();
        }
        body = new Uint8Array(await resp.arrayBuffer());
      } catch (e) {
        if (handedOver) throw e;
        // The provider may have recorded it: a resend of this request reuses this lane and seq.
        lease.unanswered(sent.auth.seq, key);
        c.inFlight--;
        await c.lock.run(() => fillGaps(c));
        throw e;
      } finally {
        clearTimeout(timer);
      }
      c.inFlight--;
      lease.slot.nextSeq = sent.auth.seq;
      const pr = resp.headers.get("payment-response");
      if (pr !== null) {
        const usage = UsageReader.forPrice(sent.price);
        usage.headers((n) => resp.headers.get(n));
        usage.chunk(body);
        const seen: Seen = { status: resp.status, bodyHash: H(body), reported: usage.finish(), credit: sent.credit ? statedCredit(body) : 0n };
        return await c.lock.run(async () => {
          const receipt = verifyReceipt(c, pr, sent, seen);
          await accept(c, lease, key, sent, receipt, resp.headers);
          const out = new Response(NULL_BODY.has(resp.status) ? null : (body as BodyInit), { status: resp.status, statusText: resp.statusText, headers: resp.headers });
          return Object.assign(out, { receipt, exchange: exchangeOf(req, seen) });
        });
      }
      const err = refusal(resp.status, new TextDecoder().decode(body));
      const reason = (err as { reason?: string }).reason;
      const fields = (err as { fields?: Record<string, any> }).fields ?? {};
      if (reason === "lane_busy" && Date.now() < busyUntil) {
        await sleep(20 * 2 ** Math.min(busyWaits++, 5));
        attempt--;
        continue;
      }
      if (reason === "checkpoint_required" && c.mirror.size === 0n) {
        // Nothing to checkpoint yet: our own requests in flight hold the credit.
        await sleep(20 * 2 ** Math.min(attempt, 5));
        continue;
      }
      const resolved = await c.lock.run(() => resolve(c, lease, key, sent, req, reason, fields));
      if (!resolved) throw err;
    }
    throw new TallyError("the provider kept refusing after resync");
  } finally {
    if (!handedOver) lease.release();
  }
}

/** What the client saw of an answer: what its receipt is checked against. */
interface Seen { status: number; bodyHash: Uint8Array; reported: Units; credit: bigint }

const exchangeOf = (req: PaidRequest, seen: Seen): Exchange => ({
  method: req.method, path: req.path, query: req.query, request_body_hash: toHex(H(req.body)),
  status: seen.status, response_body_hash: toHex(seen.bodyHash),
});

/** A verified receipt takes its place (caller holds the lock): the lane moves on, the record is mirrored. */
async function accept(c: TallyClient, lease: Lease, key: string, sent: Sent, receipt: Receipt, headers: Headers): Promise<void> {
  lease.answered(key, sent.auth.seq + 1n);
  // A restore since this was signed disowned it (HTTP.md §5.6): the response is the
  // caller's, the record is not the client's to mirror.
  if (sent.restores === c.restores) await takePlace(c, receipt);
  if (sent.sentCheckpoint) c.checkpointDue = false;
  if (headers.has("tally-checkpoint-request")) c.checkpointDue = true;
}

/** What a finished stream paid. */
export interface StreamPaid {
  /** The verified receipt. */
  receipt?: Receipt;
  /** The request and response behind the receipt's hashes, kept for a dispute. */
  exchange?: Exchange;
  /** The upstream broke the stream: it is recorded as a 502 (free unless the terms charge server errors). */
  broken: boolean;
}

interface LiveState { c: TallyClient; lease: Lease; key: string; sent: Sent; req: PaidRequest; resp: Response }

/**
 * A paid answer being received (crates/tally-client `PaidStream`). Iterate it for the body
 * chunks as they arrive (only what could be the start of the final event is held back),
 * then `finish()` verifies the receipt against exactly the bytes yielded and the usage they
 * reported, and mirrors the record. `finish()` reads whatever was not read yet.
 */
export class PaidStream implements AsyncIterable<Uint8Array> {
  /** An answer that needs no final event: its body is passed through as it comes. */
  private whole?: { reader: ReadableStreamDefaultReader<Uint8Array> | null; resp: TallyResponse };
  private live?: LiveState & {
    reader: ReadableStreamDefaultReader<Uint8Array> | null; splitter: FinalEventSplitter; hasher: BodyHasher;
    usage: UsageReader; end?: FinalEvent; done: boolean; settled?: Promise<StreamPaid>;
    /** A transport error to raise once the bytes before it are handed over. */
    failed?: unknown;
  };

  constructor(readonly status: number, readonly headers: Headers, live?: LiveState) {
    if (!live) return;
    const usage = UsageReader.forPrice(live.sent.price);
    usage.headers((n) => live.resp.headers.get(n));
    this.live = { ...live, reader: live.resp.body?.getReader() ?? null, splitter: new FinalEventSplitter(), hasher: new BodyHasher(), usage, done: false };
  }

  /** An answer read whole (a free route, a buffered or replayed answer): already verified. */
  static whole(resp: TallyResponse): PaidStream {
    const s = new PaidStream(resp.status, resp.headers);
    s.whole = { reader: resp.body?.getReader() ?? null, resp };
    return s;
  }

  /** The next body bytes, as they arrive; `null` at the end. */
  async chunk(): Promise<Uint8Array | null> {
    if (this.whole) {
      for (;;) {
        const r = this.whole.reader ? await this.whole.reader.read() : { done: true as const, value: undefined };
        if (r.done) return null;
        if (r.value.length) return r.value;
      }
    }
    const l = this.live!;
    if (l.failed !== undefined) {
      const e = l.failed;
      l.failed = undefined;
      throw e;
    }
    while (!l.done) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = l.reader ? await l.reader.read() : { done: true, value: undefined };
      } catch (e) {
        // The transport broke: what arrived is all there is (the held tail is handed over
        // first, so the caller gets every byte the receipt will cover); `finish` asks the gateway.
        l.done = true;
        const { rest, end } = l.splitter.cut();
        l.end = end;
        if (!rest.length) throw e;
        l.failed = e;
        return this.take(rest);
      }
      if (r.done) {
        l.done = true;
        const { rest, end } = l.splitter.finish();
        l.end = end;
        if (rest.length) return this.take(rest);
      } else {
        const body = l.splitter.feed(r.value);
        if (body.length) return this.take(body);
      }
    }
    return null;
  }

  private take(b: Uint8Array): Uint8Array {
    this.live!.hasher.update(b);
    this.live!.usage.chunk(b);
    return b;
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return { next: async () => { const b = await this.chunk(); return b ? { value: b, done: false } : { value: undefined, done: true }; } };
  }

  /** Reads what is left (discarding it), then verifies the receipt and mirrors the record. */
  async finish(): Promise<StreamPaid> {
    if (this.whole) return { receipt: this.whole.resp.receipt, exchange: this.whole.resp.exchange, broken: false };
    const l = this.live!;
    l.settled ??= (async () => {
      for (;;) {
        try {
          if ((await this.chunk()) === null) break;
        } catch {
          break;
        }
      }
      return this.settle();
    })();
    return l.settled;
  }

  /** Reads the whole stream into a `TallyResponse`, as `fetch` answers a buffered call. */
  async readWhole(): Promise<TallyResponse> {
    const parts: Uint8Array[] = [];
    let broke: unknown;
    for (;;) {
      let b: Uint8Array | null;
      try {
        b = await this.chunk();
      } catch (e) {
        broke = e;
        break;
      }
      if (b === null) break;
      parts.push(b);
    }
    let paid: StreamPaid;
    try {
      // Always settled, so the lane is released; after a transport error a receipt from the
      // receipts endpoint that verifies over these bytes means they are the whole body.
      paid = await this.finish();
    } catch (e) {
      throw broke ?? e;
    }
    const out = new Response(NULL_BODY.has(this.status) ? null : (concat(...parts) as BodyInit), { status: this.status, headers: this.headers });
    return Object.assign(out, { receipt: paid.receipt, exchange: paid.exchange });
  }

  private async settle(): Promise<StreamPaid> {
    const { c, lease, key, sent, req, hasher, usage } = this.live!;
    const bodyHash = hasher.digest();
    let counted = true;
    const done = () => {
      if (counted) c.inFlight--;
      counted = false;
    };
    try {
      const end = this.live!.end;
      if (end?.kind === "error") {
        // Nothing was recorded: the seq is still the lane's next.
        lease.answered(key, sent.auth.seq);
        throw refusal(this.status, end.data);
      }
      let header: string;
      try {
        header = end ? end.data : await fetchReceipt(c, sent.auth.lane, sent.auth.seq);
      } catch (e) {
        // The provider may have recorded it: the lane learns its seq from the log first.
        lease.unanswered(sent.auth.seq, key);
        done();
        await c.lock.run(() => fillGaps(c));
        throw e;
      }
      const broken = recordedBroken(header, this.status, bodyHash);
      const seen: Seen = { status: broken ? BROKEN : this.status, bodyHash, reported: usage.finish(), credit: 0n };
      done();
      return await c.lock.run(async () => {
        const receipt = verifyReceipt(c, header, sent, seen);
        await accept(c, lease, key, sent, receipt, this.headers);
        return { receipt, exchange: exchangeOf(req, seen), broken };
      });
    } finally {
      done();
      lease.release();
    }
  }
}

/**
 * Resolves a refusal under the lock (crates/tally-client `send_paid`): `true` when the
 * request may be signed again, `false` when the refusal goes back to the caller.
 */
async function resolve(
  c: TallyClient, lease: Lease, key: string, sent: Sent, req: PaidRequest, reason: string | undefined, fields: Record<string, any>,
): Promise<boolean> {
  switch (reason) {
    case "requirements_mismatch":
      // HTTP.md §3.2: the caller's `accepted` (a stock client's copy) differs from the
      // route's requirement; sign again under the requirement derived from the terms. Not
      // recorded, so the seq is still the lane's next. Our own derivation differing is a bug.
      lease.answered(key, sent.auth.seq);
      if (!sent.templated || !req.template?.accepted) return false;
      req.template = { ...req.template, accepted: undefined };
      return true;
    case "stale_seq":
      await c.resyncLocked();
      // Another request holds this seq, so ours was not recorded at it.
      lease.answered(key, c.mirror.nextSeq(lease.slot.lane));
      return true;
    case "state_mismatch": {
      const size = BigInt(fields.size ?? -1);
      if (size === c.mirror.size && fields.root !== toHex(c.mirror.head().root)) throw c.stop(`fork at size ${size}`);
      await c.resyncLocked();
      return true;
    }
    case "checkpoint_required":
      await c.postCheckpointLocked();
      return true;
    case "terms_changed":
      await c.adoptTermsLocked();
      return true;
    case "restore_required":
      await restoreLocked(c);
      return true;
    case "already_recorded":
      await recordedElsewhere(c, sent, fields.record);
      lease.answered(key, sent.auth.seq + 1n);
      throw new ResponseLostError(sent.auth.lane, sent.auth.seq);
    default:
      // Refused, so not recorded: the seq is still the lane's next.
      lease.answered(key, sent.auth.seq);
      return false;
  }
}

/** Signs one attempt under the mirror's head on the leased lane (caller holds the lock). */
async function signAttempt(c: TallyClient, lease: Lease, req: PaidRequest, reqHash: Uint8Array): Promise<[Sent, Record<string, string>]> {
  if (req.credit) {
    if (c.stopped) throw c.stopped;
  } else c.checkPay();
  let seq = lease.slot.nextSeq;
  if (seq === null) {
    await c.resyncLocked();
    seq = c.mirror.nextSeq(lease.slot.lane);
  }
  lease.slot.nextSeq = seq;
  // Priced under the terms served now: after `terms_changed` the retry signs the new ones.
  const price: Price = req.credit ? { kind: "fixed", amount: "0" } : priceFor(c.terms.terms, req.method, req.path);
  const routeMax = priceMax(price) ?? 0n;
  const max = req.maxAmount === undefined || req.maxAmount > routeMax ? routeMax : req.maxAmount;
  const head = c.mirror.head();
  const auth: Authorization = {
    channelId: c.channel, lane: lease.slot.lane, seq, requestHash: reqHash, maxAmount: max,
    ackSize: head.size, ackRoot: head.root, ackCumulative: head.cumulative, termsHash: c.terms.hash,
  };
  const sig = signAuthorization(c.sessionSeed, auth);
  const fresh = requirementsFor(c.terms, price);
  const given = req.template?.accepted;
  const accepted = given && given.extra?.terms_hash === fresh.extra.terms_hash ? given : fresh;
  const payment = { ...req.template, ...paymentPayload(accepted, auth, sig) };
  // The receipt's response hash covers the body as the gateway sent it; fetch would decode a
  // compressed body before the client sees it, so paid responses are asked for uncompressed.
  const headers: Record<string, string> = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), v]));
  Object.assign(headers, { "accept-encoding": "identity", "payment-signature": encodeHeader(payment) });
  // `TE: trailers` would have the gateway stream any answer with its receipt in a trailer
  // (HTTP.md §5.7), which fetch cannot read: receipts come in the header or the final event.
  delete headers.te;
  const sentCheckpoint = c.checkpointDue && c.mirror.size > 0n;
  if (sentCheckpoint) headers["tally-checkpoint"] = encodeHeader(c.signCheckpoint());
  const t = c.terms.terms;
  return [{ templated: accepted === given, auth, sig, max, price, provider: c.providerKey, chargeServerErrors: t.charge_server_errors, sentCheckpoint, restores: c.restores, credit: req.credit === true }, headers];
}

/**
 * Verifies a receipt against what was signed (crates/tally-client `check_receipt`): the
 * provider's signature, channel, lane, seq, authorization hash, amount ≤ max, the charge the
 * terms give for this response, and the response hash. Any failure stops the client.
 */
function verifyReceipt(c: TallyClient, header: string, sent: Sent, seen: Seen): Receipt {
  let o: Outcome, signature: Uint8Array, payer: string | undefined;
  try {
    ({ outcome: o, signature, payer } = parsePaymentResponse(header));
  } catch (e) {
    throw c.stop(`unreadable receipt: ${(e as Error).message}`);
  }
  const record: LogRecord = { authorization: sent.auth, clientSignature: sent.sig, outcome: o };
  const w = wireRecord(record, signature);
  const fail = (why: string) => c.stop(`receipt: ${why}`);
  if (!equal(o.channelId, sent.auth.channelId)) throw fail("channel");
  if (o.lane !== sent.auth.lane || o.seq !== sent.auth.seq) throw fail(`lane/seq ${o.lane}/${o.seq} for ${sent.auth.lane}/${sent.auth.seq}`);
  if (!equal(o.authorizationHash, authorizationHash(sent.auth, sent.sig))) throw fail("authorization hash");
  if (o.amount > 0n && o.amount > sent.auth.maxAmount) throw fail(`amount ${o.amount} over max ${sent.auth.maxAmount}`);
  // fetch never shows trailers: a trailer meter counts 0 unless the caller chose to take its
  // count from the receipt (the amount is still checked against the price over it).
  const trailer = (i: number) => sent.price.kind === "metered" && sent.price.meters[i] !== undefined && "trailer" in sent.price.meters[i].from;
  const reported = seen.reported.map((u, i) => (c.trustTrailerUnits && trailer(i) ? o.units[i] : u));
  const want = sent.credit ? { units: [0n, 0n, 0n, 0n], amount: seen.credit }
    : expectedCharge(sent.chargeServerErrors, sent.price, seen.status, reported, sent.max);
  if (o.units.some((u, i) => u !== want.units[i])) throw fail(`units [${o.units.join(", ")}], expected [${want.units.join(", ")}]`);
  if (o.amount !== want.amount) throw fail(`amount ${o.amount}, the terms give ${want.amount}`);
  if (!equal(o.responseHash, responseHashWithBodyHash(seen.status, seen.bodyHash))) throw fail("response hash");
  decodeRecord(fromHex(w.record));
  if (!verifyOutcome(sent.provider, o, signature)) throw fail("provider signature");
  return { outcome: o, signature, record, payer };
}


/** The credit a granted dispute's body states (`amount`, negative), else 0. */
function statedCredit(body: Uint8Array): bigint {
  try {
    return parseAmount(JSON.parse(new TextDecoder().decode(body)).amount, true);
  } catch {
    return 0n;
  }
}

/** Puts a verified record at its index: now if next, else held until the gap fills (§5.5). */
async function takePlace(c: TallyClient, r: Receipt): Promise<void> {
  if (r.outcome.index >= c.mirror.size) c.ahead.set(r.outcome.index, wireRecord(r.record, r.signature));
  await c.drainAheadLocked();
  await fillGaps(c);
}

/** A gap no request in flight can fill (its answer was lost) is filled from the provider's log. */
async function fillGaps(c: TallyClient): Promise<void> {
  if (c.ahead.size > 0 && c.inFlight === 0) await c.resyncLocked();
}

/** `already_recorded`: the record must be exactly ours; it takes its place. */
async function recordedElsewhere(c: TallyClient, sent: Sent, w: { record: string; provider_signature: string } | undefined): Promise<void> {
  if (!w) throw c.stop("already_recorded without a record");
  let r: LogRecord;
  try {
    r = decodeRecord(fromHex(w.record));
  } catch (e) {
    throw c.stop(`already_recorded: ${(e as Error).message}`);
  }
  const a = r.authorization;
  if (!equal(a.requestHash, sent.auth.requestHash) || a.lane !== sent.auth.lane || a.seq !== sent.auth.seq || r.authorization.channelId.length !== 32) {
    throw c.stop("already_recorded for another request");
  }
  if (!verifyOutcome(sent.provider, r.outcome, fromHex(w.provider_signature, 64))) throw c.stop("already_recorded: provider signature");
  await takePlace(c, { outcome: r.outcome, signature: fromHex(w.provider_signature, 64), record: r });
}

