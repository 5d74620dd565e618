/**
 * The paying client (spec/HTTP.md, mirroring crates/tally-client): `client.fetch(url)` signs
 * the authorization under the mirror's head, sends request and payment together (P1: no 402
 * round trip when the terms are known), verifies the receipt, and puts the record in its
 * place in the mirror, holding receipts that arrive ahead of a gap (PROTOCOL.md §5.5).
 * Requests run concurrently over lanes (§5.4). The session key is bound at connect
 * (HTTP.md §5.2) and checkpoints are signed when the gateway asks (§6).
 */
import { TallyError, equal, fromHex, toHex, utf8 } from "./bytes.js";
import { type Checkpoint, signCheckpointNote, verifyNote } from "./checkpoint.js";
import { ed25519Public } from "./crypto.js";
import { checkpointDigest, sessionDigest, signEip712 } from "./eip712.js";
import { MisbehaviorError, TermsRaisedError, answer } from "./errors.js";
import { LanePool, Mutex } from "./lanes.js";
import { type LogState, MemoryStore, Mirror, type MirrorStore, type WireRecord } from "./mirror.js";
import { readTokenHeader } from "./messages.js";
import { type Discovered, type TermsIncrease, parseTerms, priceFor, priceIncreases } from "./terms.js";
import { API_PREFIX, WELL_KNOWN_PATH } from "./wire.js";
import { type Exchange, type PaidRequest, PaidStream, sendPaid, sendPaidStream, type TallyResponse } from "./paid.js";
import { restoreLocked } from "./restore.js";
import { makeBundle, type ProofBundle } from "./bundle.js";

export interface TallyClientConfig {
  /** The gateway, e.g. `http://127.0.0.1:8402`. */
  baseUrl: string;
  /** The channel opened onchain, 64 hex digits. */
  channelId: string;
  /** The ed25519 session key (32-byte seed) that signs authorizations and checkpoint notes. */
  sessionKey: Uint8Array;
  /** The secp256k1 key registered as the channel's checkpoint signer. */
  checkpointKey: Uint8Array;
  /** Where the mirror lives (default: memory; `FileStore` from `@tally/x402-client/node`). */
  store?: MirrorStore;
  /** The provider key the terms must carry (else trusted on first use and pinned). */
  providerKey?: string;
  /** Adopt terms that raise prices (spec/HTTP.md §4.4); default false. */
  acceptTermsChanges?: boolean;
  /** Most requests in flight at once (capped by the terms' `max_lanes`); default 32. */
  lanes?: number;
  /** Per-request timeout, also the longest a request waits for a busy lane; default 30 s. */
  timeoutMs?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /**
   * fetch never shows HTTP trailers, so the client cannot see what a `trailer` meter
   * (spec/HTTP.md §4.1) reported: by default it counts 0 there, as the Rust client does for
   * a buffered answer, and a receipt charging such units stops the client. `true` takes a
   * trailer meter's count from the receipt instead (the amount is still checked against the
   * price over those units, and capped by the authorization).
   */
  trustTrailerUnits?: boolean;
}

export interface RequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** Authorize at most this much (capped by the route's maximum). */
  maxAmount?: bigint;
}

export class TallyClient {
  readonly base: string;
  readonly channel: Uint8Array;
  readonly sessionSeed: Uint8Array;
  readonly sessionPublic: Uint8Array;
  readonly checkpointKey: Uint8Array;
  readonly http: typeof fetch;
  readonly timeoutMs: number;
  readonly trustTrailerUnits: boolean;
  readonly lock = new Mutex();
  lanes!: LanePool;
  mirror!: Mirror;
  terms!: Discovered;
  accepted!: Discovered;
  raised: TermsIncrease[] = [];
  salt?: Uint8Array;
  stopped?: MisbehaviorError;
  checkpointDue = false;
  inFlight = 0;
  /** Restores done (HTTP.md §5.6): a receipt for a request signed before the latest is disowned. */
  restores = 0;
  ahead = new Map<bigint, WireRecord>();

  private constructor(private readonly cfg: TallyClientConfig) {
    this.base = cfg.baseUrl.replace(/\/+$/, "");
    this.channel = fromHex(cfg.channelId.replace(/^0x/, ""), 32);
    this.sessionSeed = cfg.sessionKey;
    this.sessionPublic = ed25519Public(cfg.sessionKey);
    this.checkpointKey = cfg.checkpointKey;
    this.http = cfg.fetch ?? globalThis.fetch;
    this.timeoutMs = cfg.timeoutMs ?? 30_000;
    this.trustTrailerUnits = cfg.trustTrailerUnits === true;
  }

  /** Opens the mirror, discovers the terms, binds the session key and resyncs. */
  static async connect(cfg: TallyClientConfig): Promise<TallyClient> {
    const c = new TallyClient(cfg);
    c.terms = await c.discover();
    const served = c.terms.terms.provider_key;
    const providerKey = fromHex(served, 32);
    c.mirror = await Mirror.open(cfg.store ?? new MemoryStore(), c.channel, c.sessionPublic, providerKey);
    const pinned = cfg.providerKey ?? c.mirror.getMeta("provider_key");
    if (pinned !== undefined && pinned !== served) throw new MisbehaviorError(`provider key changed: pinned ${pinned}, served ${served}`);
    await c.mirror.putMeta("provider_key", served);
    const kept = c.mirror.getMeta("terms");
    c.accepted = kept === undefined ? c.terms : parseTerms(utf8(kept));
    await c.review(c.terms);
    await c.bindSession();
    await c.lock.run(() => c.resyncLocked());
    c.lanes = new LanePool(Math.max(1, Math.min(cfg.lanes ?? 32, c.terms.terms.max_lanes)), (lane) => c.mirror.nextSeq(lane));
    return c;
  }

  get providerKey(): Uint8Array { return fromHex(this.terms.terms.provider_key, 32); }
  /** The verified head: what authorizations acknowledge and checkpoints sign. */
  head(): LogState { return this.mirror.head(); }
  /** Changes of the served terms not yet accepted (paid requests fail until they are). */
  termsRaised(): TermsIncrease[] { return [...this.raised]; }

  /** Accepts the served terms even if they raise prices (the caller's consent, §4.4). */
  async acceptTerms(): Promise<void> {
    await this.adopt(this.terms);
  }

  url(tail: string): string { return `${this.base}${API_PREFIX}/channels/${toHex(this.channel)}${tail}`; }

  async discover(): Promise<Discovered> {
    const resp = await this.http(`${this.base}${WELL_KNOWN_PATH}`, { signal: AbortSignal.timeout(this.timeoutMs) });
    if (!resp.ok) throw new TallyError(`terms document answered ${resp.status}`);
    return parseTerms(new Uint8Array(await resp.arrayBuffer()));
  }

  private async adopt(d: Discovered): Promise<void> {
    await this.mirror.putMeta("terms", new TextDecoder().decode(d.bytes));
    this.accepted = d;
    this.raised = [];
  }

  /** Reviews served terms against the accepted ones (spec/HTTP.md §4.4). */
  async review(d: Discovered): Promise<void> {
    const raised = priceIncreases(this.accepted.terms, d.terms);
    if (raised.length === 0 || this.cfg.acceptTermsChanges) await this.adopt(d);
    else this.raised = raised;
  }

  checkPay(): void {
    if (this.stopped) throw this.stopped;
    if (this.raised.length) throw new TermsRaisedError(this.raised);
  }

  stop(what: string): MisbehaviorError {
    this.stopped = new MisbehaviorError(what);
    return this.stopped;
  }

  /** Binds the session key with the checkpoint key's EIP-712 signature (§5.2); keeps the salt. */
  private async bindSession(): Promise<void> {
    const chain = this.terms.terms.chain;
    const sig = signEip712(this.checkpointKey, sessionDigest(chain.chain_id, chain.contract, this.channel, this.sessionPublic));
    const bound = await this.postJson("/session", { session_key: toHex(this.sessionPublic), eip712: sig });
    if (bound.bound !== toHex(this.sessionPublic)) throw new TallyError("the provider bound another session key");
    const salt = fromHex(bound.request_salt, 32);
    const kept = this.mirror.getMeta("request_salt");
    if (kept !== undefined && kept !== bound.request_salt) throw new TallyError("the provider's request salt changed since this mirror bound the channel");
    if (kept === undefined) await this.mirror.putMeta("request_salt", bound.request_salt);
    this.salt = salt;
  }

  /** A channel read with a read token (HTTP.md §5.1). */
  async getJson(url: string): Promise<any> {
    const u = new URL(url);
    const token = readTokenHeader(this.sessionSeed, this.channel, "GET", u.pathname + u.search, BigInt(Date.now()));
    return answer(await this.http(url, { headers: { "tally-read-auth": token }, signal: AbortSignal.timeout(this.timeoutMs) }));
  }

  async postJson(tail: string, value: unknown): Promise<any> {
    return answer(await this.http(this.url(tail), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(value),
      signal: AbortSignal.timeout(this.timeoutMs),
    }));
  }

  /**
   * Levels the mirror with the provider's log (HTTP.md §9 "Resync"): fetches and verifies
   * what the provider holds beyond the mirror, refuses a provider that lost records or
   * forked. Caller holds the lock.
   */
  async resyncLocked(mayRestore = true): Promise<void> {
    const theirs = await this.getJson(this.url(""));
    const size = BigInt(theirs.size);
    if (mayRestore && theirs.restore_required && size <= this.mirror.size) return restoreLocked(this);
    if (size < this.mirror.size) throw this.stop(`lost records: ours ${this.mirror.size}, theirs ${size}`);
    while (this.mirror.size < size) {
      const page = await this.getJson(this.url(`/records?from=${this.mirror.size}&to=${size}`));
      if (!page.records?.length) throw new TallyError("records endpoint returned nothing");
      for (const w of page.records as WireRecord[]) {
        try {
          await this.mirror.append(w, this.providerKey);
        } catch (e) {
          throw this.stop((e as Error).message);
        }
      }
    }
    if (!equal(fromHex(theirs.root, 32), this.mirror.head().root)) throw this.stop(`fork at size ${size}`);
    this.lanes?.setFree((lane) => this.mirror.nextSeq(lane));
    await this.drainAheadLocked();
  }

  /** Mirrors held receipts that are now next in line; drops those the log already holds. */
  async drainAheadLocked(): Promise<void> {
    for (const k of [...this.ahead.keys()]) if (k < this.mirror.size) this.ahead.delete(k);
    for (let w = this.ahead.get(this.mirror.size); w; w = this.ahead.get(this.mirror.size)) {
      this.ahead.delete(this.mirror.size);
      try {
        await this.mirror.append(w, this.providerKey);
      } catch (e) {
        throw this.stop((e as Error).message);
      }
    }
  }

  /** The mirror's head as a checkpoint. */
  headCheckpoint(): Checkpoint {
    const h = this.mirror.head();
    return { channelId: this.channel, size: h.size, root: h.root, cumulative: h.cumulative };
  }

  /** `{note, eip712}` at the mirror's head (HTTP.md §6): a state verified record by record. */
  signCheckpoint(): { note: string; eip712: { v: number; r: string; s: string } } {
    const cp = this.headCheckpoint();
    const chain = this.terms.terms.chain;
    return {
      note: signCheckpointNote(cp, this.sessionSeed, this.sessionPublic),
      eip712: signEip712(this.checkpointKey, checkpointDigest(chain.chain_id, chain.contract, cp)),
    };
  }

  /** Signs a checkpoint at the mirror's head and posts it; returns the cosigned note. */
  checkpoint(): Promise<string> {
    return this.lock.run(() => this.postCheckpointLocked());
  }

  async postCheckpointLocked(): Promise<string> {
    const wire = this.signCheckpoint();
    const back = await this.postJson("/checkpoints", wire);
    const note = verifyNote(back.note, this.sessionPublic, this.providerKey, true);
    const ours = this.headCheckpoint();
    if (note.checkpoint.size !== ours.size || !equal(note.checkpoint.root, ours.root) || note.checkpoint.cumulative !== ours.cumulative) {
      throw new TallyError("the cosigned checkpoint is not the one sent");
    }
    await this.mirror.putMeta("checkpoint", back.note);
    this.checkpointDue = false;
    return back.note;
  }

  /**
   * A proof bundle of mirrored record `index` (PROTOCOL.md §7.3) against the latest
   * checkpoint the provider cosigned (kept by `checkpoint()`).
   */
  proofBundle(index: number): ProofBundle {
    const note = this.mirror.getMeta("checkpoint");
    if (note === undefined) throw new TallyError("no cosigned checkpoint held: call checkpoint() first");
    const record = this.mirror.records[index];
    if (!record) throw new TallyError(`no record ${index} in the mirror`);
    return makeBundle(this.sessionPublic, this.providerKey, record, index, this.mirror.leaves, note);
  }

  /**
   * Disputes mirrored record `index` (HTTP.md §7): posts a proof bundle against the latest
   * cosigned checkpoint and the record's exchange, paid with a `max_amount = 0`
   * authorization. Returns the grant (the credit record is verified and mirrored), or throws
   * the provider's refusal (`dispute_refused` with its `why`).
   */
  async dispute(index: number, exchange: Exchange): Promise<{ disputed_index: number; amount: string; rule: string }> {
    const body = utf8(JSON.stringify({ bundle: this.proofBundle(index), exchange }));
    const path = `${API_PREFIX}/channels/${toHex(this.channel)}/disputes`;
    const r = await sendPaid(this, { method: "POST", path, query: "", headers: { "content-type": "application/json" }, body, maxAmount: 0n, credit: true });
    return r.json();
  }

  /** After `terms_changed`: re-fetch, refuse a new provider key, review the change. */
  async adoptTermsLocked(): Promise<void> {
    const fresh = await this.discover();
    if (fresh.terms.provider_key !== this.terms.terms.provider_key) throw this.stop("provider key changed");
    this.terms = fresh;
    await this.review(fresh);
  }

  /**
   * Sends a request, paying if its route is priced. The body is read whole (the receipt
   * covers its hash); a streamed answer is read to its end and its final event taken off.
   * The answer is a standard `Response` with the verified `receipt`.
   */
  async fetch(input: string, opts: RequestOptions = {}): Promise<TallyResponse> {
    const req = this.prepare(input, opts);
    if (req.free) {
      const r = await this.http(req.url, { method: req.method, headers: opts.headers, body: req.body.length ? (req.body as BodyInit) : undefined });
      return Object.assign(r, { receipt: undefined });
    }
    return sendPaid(this, req);
  }

  /**
   * Sends a request whose answer may stream (an event stream, e.g. an OpenAI-compatible
   * `stream: true` completion): iterate the returned `PaidStream` for the body as it
   * arrives, then `await stream.finish()` for the receipt, verified against exactly the
   * bytes handed over and the usage they reported (from the final `payment-response`
   * event, or the receipts endpoint when the end was lost).
   */
  async stream(input: string, opts: RequestOptions = {}): Promise<PaidStream> {
    const req = this.prepare(input, opts);
    if (req.free) {
      const r = await this.http(req.url, { method: req.method, headers: opts.headers, body: req.body.length ? (req.body as BodyInit) : undefined });
      return PaidStream.whole(Object.assign(r, { receipt: undefined }));
    }
    return sendPaidStream(this, req);
  }

  private prepare(input: string, opts: RequestOptions): PaidRequest & { url: string; free: boolean } {
    const method = (opts.method ?? "GET").toUpperCase();
    const rest = input.startsWith("/") ? input : input.startsWith(this.base + "/") ? input.slice(this.base.length) : null;
    if (rest === null) throw new TallyError(`${input} is not on ${this.base}`);
    // The request hash covers the path and query exactly as sent (PROTOCOL.md §3.3): take
    // them from the URL fetch will send (percent-encoded, dot segments removed), not the input.
    const sent = new URL(this.base + rest);
    const path = sent.pathname, query = sent.search.slice(1);
    const body = typeof opts.body === "string" ? utf8(opts.body) : opts.body ?? new Uint8Array();
    const free = priceFor(this.terms.terms, method, path).kind === "free";
    return { url: this.base + rest, free, method, path, query, headers: opts.headers ?? {}, body, maxAmount: opts.maxAmount };
  }
}
