/**
 * A small in-process tally gateway for client tests (127.0.0.1 only). It follows
 * spec/HTTP.md closely enough to judge the client: it checks the PAYMENT-SIGNATURE format
 * (x402 v2 with `accepted` = the full advertised requirements), the session key's strict
 * signature, the terms hash, lanes and seqs, the acknowledged state, and appends records
 * with provider-signed outcomes. Knobs inject refusals and misbehaviour.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import {
  Frontier, authorizationHash, checkpointBody, decodeAuthorization, decodeRecord, ed25519Public, ed25519Sign, ed25519VerifyStrict,
  encodeAuthorization, encodeOutcome, encodeRecord, equal, fromHex, keyId, leafHash, parseCheckpointBody,
  requestHash, responseHash, termsHash, toBase64, toHex, u64BE, utf8, concat, verifyBundle, verifyNote,
  type Authorization, type Outcome,
} from "../src/index.js";

export interface MockOptions {
  checkpointEvery?: number;
  maxLanes?: number;
  price?: string;
  /** Refusals to answer, in order, to the next paid requests (before admission). */
  refuse?: { reason: string; status: number; fields?: Record<string, unknown> }[];
  /** Corrupt the next receipt's amount (a misbehaving provider). */
  overcharge?: boolean;
  /** Record the next paid request, then drop the connection without answering. */
  dropNext?: boolean;
  /**
   * How the next streamed answer (`POST /v1/chat`) ends: `break` = the upstream breaks
   * halfway (recorded as a 502 over the bytes forwarded), `lose-end` = recorded, then the
   * connection drops before the final event (the receipt waits at the receipts endpoint,
   * answering `lane_busy` once), `error` = nothing recorded (`payment-error`), `overcount`
   * = the receipt claims one more output unit than the stream reported; `cut-final` = the
   * connection drops halfway through the final event, `cut-after-final` = right after it
   * (before the body's end).
   */
  streamEnd?: "break" | "lose-end" | "cut-final" | "cut-after-final" | "error" | "overcount";
  /** Awaited before the stream's second half is sent (a test checks chunks arrive before the end). */
  holdStream?: Promise<void>;
}

/** The metered routes of the mock (spec/HTTP.md §4.1 meters): an OpenAI-like stream and a JSON body. */
export const CHAT_PRICE = {
  kind: "metered", max_amount: "1000", min_charge: "2", meters: [
    { name: "input", unit_price: "1", from: { sse: "/usage/prompt_tokens" } },
    { name: "output", unit_price: "3", from: { sse: "/usage/completion_tokens" } },
  ],
};
export const JSON_PRICE = { kind: "metered", meters: [{ name: "tokens", unit_price: "2", from: { json: "/usage/total_tokens" } }], max_amount: "500" };

/** A route counted in a trailer, which fetch cannot see (the mock reports 9 units there). */
export const TRAILER_PRICE = { kind: "metered", meters: [{ name: "units", unit_price: "1", from: { trailer: "x-units" } }], max_amount: "100" };

/** The event stream the mock's upstream sends for `{prompt_tokens, completion_tokens}`, in pieces. */
export function chatStream(prompt: number, completion: number): Uint8Array[] {
  return [
    'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
    'data: {"choices":[{"delta":{"content":"lo"}}]}\r\n\r\n: keep-alive\n\nevent: message\ndata: {"usage":',
    `{"prompt_tokens":${prompt},\ndata: "completion_tokens":${completion}}}\n`,
    "\ndata: [DONE]\n\n",
  ].map(utf8);
}

export class MockGateway {
  server!: Server;
  base = "";
  readonly providerSeed = new Uint8Array(32).fill(9);
  readonly providerKey = ed25519Public(this.providerSeed);
  readonly salt = new Uint8Array(32).fill(5);
  termsBytes: Uint8Array;
  session?: Uint8Array;
  records: { bytes: Uint8Array; sig: Uint8Array; outcome: Outcome; auth: Authorization }[] = [];
  frontier = new Frontier();
  states: { root: Uint8Array; cumulative: bigint }[] = [{ root: new Frontier().root(), cumulative: 0n }];
  lanes = new Map<number, bigint>();
  checkpoints: string[] = [];
  payments: any[] = [];
  checkpointHeaders = 0;
  lastCheckpointSize = 0;
  /** Each lane's last answer, replayed to a retry of its (lane, seq, request hash) (HTTP.md §9). */
  held = new Map<number, { seq: bigint; requestHash: string; headers: Record<string, string>; body: Uint8Array }>();
  /** Set by `crash`: the nonce a restore must name (HTTP.md §5.6). */
  restoreNonce?: Uint8Array;
  restores: { appended: number; complete: boolean }[] = [];
  /** PAYMENT-RESPONSE values by `lane/seq`, for the receipts endpoint; `busy` answers lane_busy once. */
  receipts = new Map<string, { index: number; value: string; busy: boolean }>();

  constructor(readonly opts: MockOptions = {}) {
    this.termsBytes = this.render(opts.price ?? "10");
  }

  render(price: string): Uint8Array {
    return utf8(JSON.stringify({
      format: "tally-terms/v2", provider_key: toHex(this.providerKey),
      chain: { chain_id: 31337, contract: "0x" + "11".repeat(20), asset: "0x" + "22".repeat(20), pay_to: "0x" + "33".repeat(20) },
      credit_limit: "1000000", max_lanes: this.opts.maxLanes ?? 4,
      checkpoint: { every_records: this.opts.checkpointEvery ?? 0, every_seconds: 0, every_amount: "0" },
      charge_server_errors: false, refunds: { server_errors: true, over_max: true },
      max_request_bytes: 1048576, max_response_bytes: 8388608,
      routes: [
        { method: "*", path: "/v1/items", match: "prefix", price: { kind: "fixed", amount: price } },
        { method: "POST", path: "/v1/chat", match: "exact", price: CHAT_PRICE },
        { method: "POST", path: "/v1/json", match: "exact", price: JSON_PRICE },
        { method: "GET", path: "/v1/trailer", match: "exact", price: TRAILER_PRICE },
      ],
    }, null, 2) + "\n");
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => this.handle(req, res, new Uint8Array(Buffer.concat(chunks))).catch((e) => {
        res.writeHead(500).end(String(e));
      }));
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }

  private json(res: ServerResponse, status: number, v: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(v));
  }

  private refuse(res: ServerResponse, status: number, reason: string, fields: Record<string, unknown> = {}): void {
    this.json(res, status, { error: { reason, message: reason, ...fields } });
  }

  /** A promise-mode crash: only the first `keep` records were durable; a restore is required. */
  crash(keep: number): void {
    const kept = this.records.slice(0, keep);
    this.records = [];
    this.frontier = new Frontier();
    this.states = [this.states[0]];
    this.lanes.clear();
    this.held.clear();
    for (const r of kept) this.push(r);
    this.restoreNonce = new Uint8Array(32).fill(keep + 1);
  }

  private push(r: MockGateway["records"][number]): void {
    this.records.push(r);
    this.frontier.push(leafHash(r.bytes));
    this.states.push({ root: this.frontier.root(), cumulative: r.outcome.cumulative });
    this.lanes.set(r.auth.lane, r.auth.seq + 1n);
  }

  private head() {
    const size = this.records.length;
    return { size, root: toHex(this.states[size].root), cumulative: String(this.states[size].cumulative) };
  }

  /** POST /restore: statement signature and nonce, base = head, each record provider-signed and in place. */
  private restore(res: ServerResponse, b: { records: { record: string; provider_signature: string }[]; statement: string; signature: string }): void {
    const st = fromHex(b.statement);
    if (!ed25519VerifyStrict(this.session!, st, fromHex(b.signature))) return this.refuse(res, 402, "invalid_signature");
    const body = st.subarray(14);
    const nonce = body.subarray(33, 65), baseSize = Number(Buffer.from(body.subarray(65, 73)).readBigUInt64LE());
    const complete = body[161] === 1;
    if (!this.restoreNonce || !equal(nonce, this.restoreNonce) || baseSize !== this.records.length) return this.refuse(res, 422, "restore_refused", { index: null });
    for (const w of b.records) {
      const rec = decodeRecord(fromHex(w.record));
      const o = rec.outcome;
      const sig = fromHex(w.provider_signature);
      const prev = this.states[this.records.length].cumulative;
      if (!ed25519VerifyStrict(this.providerKey, encodeOutcome(o), sig) || Number(o.index) !== this.records.length || o.cumulative !== prev + o.amount) {
        return this.refuse(res, 422, "restore_refused", { index: Number(o.index) });
      }
      this.push({ bytes: fromHex(w.record), sig, outcome: o, auth: rec.authorization });
    }
    if (complete) this.restoreNonce = undefined;
    this.restores.push({ appended: b.records.length, complete });
    this.json(res, 200, { appended: b.records.length, ...this.head() });
  }

  wire(i: number) {
    return { record: toHex(this.records[i].bytes), provider_signature: toHex(this.records[i].sig) };
  }

  private async handle(req: IncomingMessage, res: ServerResponse, body: Uint8Array): Promise<void> {
    const url = new URL(req.url!, this.base);
    const p = url.pathname;
    if (p === "/.well-known/tally") return void res.writeHead(200, { "content-type": "application/json" }).end(this.termsBytes);
    if (/^\/tally\/v1\/channels\/[0-9a-f]{64}\/disputes$/.test(p)) return this.paid(req, res, url, body, true);
    const ch = /^\/tally\/v1\/channels\/([0-9a-f]{64})(\/.*)?$/.exec(p);
    if (ch) return this.endpoint(req, res, url, ch[2] ?? "", body);
    if (p.startsWith("/v1/items") || p === "/v1/chat" || p === "/v1/json" || p === "/v1/trailer") return this.paid(req, res, url, body);
    this.json(res, 200, { free: true });
  }

  private async endpoint(req: IncomingMessage, res: ServerResponse, url: URL, tail: string, body: Uint8Array): Promise<void> {
    if (tail === "/session") {
      const b = JSON.parse(new TextDecoder().decode(body));
      this.session = fromHex(b.session_key, 32);
      return this.json(res, 200, { bound: b.session_key, request_salt: toHex(this.salt) });
    }
    if (req.method === "GET") {
      const [at, sig] = String(req.headers["tally-read-auth"] ?? "").split(".");
      const channel = fromHex(url.pathname.split("/")[4], 32);
      const { readTokenBytes } = await import("../src/messages.js");
      const msg = readTokenBytes(channel, "GET", url.pathname + url.search, BigInt(at || "0"));
      if (!this.session || !sig || !ed25519VerifyStrict(this.session, msg, fromHex(sig))) return this.refuse(res, 401, "unauthorized");
    }
    const size = this.records.length;
    if (tail === "") {
      return this.json(res, 200, {
        channel_id: url.pathname.split("/")[4], ...this.head(), restore_required: this.restoreNonce !== undefined,
        ...(this.restoreNonce ? { restore_nonce: toHex(this.restoreNonce) } : {}),
      });
    }
    if (tail === "/restore" && req.method === "POST") return this.restore(res, JSON.parse(new TextDecoder().decode(body)));
    if (tail === "/records") {
      const from = Number(url.searchParams.get("from")), to = Number(url.searchParams.get("to") ?? size);
      return this.json(res, 200, { from, records: this.records.slice(from, to).map((_, k) => this.wire(from + k)), size });
    }
    if (tail === "/receipts") {
      const key = `${url.searchParams.get("lane")}/${url.searchParams.get("seq")}`;
      const r = this.receipts.get(key);
      if (!r) return this.refuse(res, 404, "not_found");
      if (r.busy) {
        r.busy = false;
        return this.refuse(res, 409, "lane_busy", { lane: Number(url.searchParams.get("lane")) });
      }
      const [lane, seq] = key.split("/").map(Number);
      return this.json(res, 200, { lane, seq, index: r.index, payment_response: r.value });
    }
    if (tail === "/checkpoints" && req.method === "POST") {
      const b = JSON.parse(new TextDecoder().decode(body));
      return this.acceptCheckpoint(res, b);
    }
    this.refuse(res, 404, "not_found");
  }

  /** Verifies a client-signed note, checks it against the log, cosigns (PROTOCOL.md §6.3). */
  cosign(note: string): string | string[] {
    const v = verifyNote(note, this.session!, this.providerKey, false);
    const cp = parseCheckpointBody(v.body);
    const size = Number(cp.size);
    if (!v.clientSigned || size < 1 || size > this.records.length) return ["state_mismatch"];
    if (!equal(this.states[size].root, cp.root) || this.states[size].cumulative !== cp.cumulative) return ["state_mismatch"];
    const t = 1798761700n;
    const sig = ed25519Sign(this.providerSeed, utf8(`cosignature/v1\ntime ${t}\n${checkpointBody(cp)}`));
    const line = `\u2014 tally-provider ${toBase64(concat(keyId("tally-provider", 4, this.providerKey), u64BE(t), sig))}\n`;
    this.lastCheckpointSize = size;
    const cosigned = note + line;
    this.checkpoints.push(cosigned);
    return cosigned;
  }

  private acceptCheckpoint(res: ServerResponse, b: { note: string; eip712: unknown }): void {
    const out = this.cosign(b.note);
    if (Array.isArray(out)) return this.refuse(res, 409, out[0]);
    this.json(res, 200, { note: out, eip712: b.eip712 });
  }

  private async paid(req: IncomingMessage, res: ServerResponse, url: URL, body: Uint8Array, dispute = false): Promise<void> {
    const header = req.headers["payment-signature"];
    const terms = JSON.parse(new TextDecoder().decode(this.termsBytes));
    const route = terms.routes.find((r: { path: string }) => url.pathname.startsWith(r.path));
    const price = dispute ? "0" : route.price.amount ?? route.price.max_amount;
    const accepts = {
      scheme: "tally", network: "eip155:31337", amount: price, asset: terms.chain.asset, payTo: terms.chain.pay_to,
      maxTimeoutSeconds: 60,
      extra: { contract: terms.chain.contract, provider_key: terms.provider_key, terms_hash: toHex(termsHash(this.termsBytes)), terms_url: "/.well-known/tally" },
    };
    if (typeof header !== "string") {
      const pr = { x402Version: 2, error: "payment_required", resource: { url: url.pathname + url.search, description: "", mimeType: "" }, accepts: [accepts] };
      res.writeHead(402, { "payment-required": toBase64(utf8(JSON.stringify(pr))), "content-type": "application/json" });
      return void res.end(JSON.stringify({ error: { reason: "payment_required", message: "pay" } }));
    }
    const payment = JSON.parse(Buffer.from(header, "base64").toString("utf8"));
    this.payments.push(payment);
    if (payment.x402Version !== 2) return this.refuse(res, 400, "malformed");
    const authBytes = fromHex(payment.payload.authorization);
    const a = decodeAuthorization(authBytes);
    const sig = fromHex(payment.payload.signature, 64);
    if (!ed25519VerifyStrict(this.session!, encodeAuthorization(a), sig)) return this.refuse(res, 402, "invalid_signature");
    if (!equal(a.termsHash, termsHash(this.termsBytes))) return this.refuse(res, 402, "terms_changed", { terms_hash: toHex(termsHash(this.termsBytes)) });
    // Under the current terms, `accepted` must be exactly the advertised requirements (HTTP.md §3.2).
    const member = ["scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"]
      .find((k) => JSON.stringify(payment.accepted?.[k]) !== JSON.stringify((accepts as Record<string, unknown>)[k]));
    if (member) return this.refuse(res, 402, "requirements_mismatch", { member });
    const cpHeader = req.headers["tally-checkpoint"];
    if (typeof cpHeader === "string") {
      this.checkpointHeaders++;
      const out = this.cosign(JSON.parse(Buffer.from(cpHeader, "base64").toString("utf8")).note);
      if (Array.isArray(out)) return this.refuse(res, 409, out[0]);
    }
    if (this.restoreNonce) return this.refuse(res, 409, "restore_required", { ...this.head(), nonce: toHex(this.restoreNonce) });
    const injected = this.opts.refuse?.shift();
    if (injected) return this.refuse(res, injected.status, injected.reason, injected.fields);
    const last = this.held.get(a.lane);
    if (last && last.seq === a.seq && last.requestHash === toHex(a.requestHash)) {
      return void res.writeHead(200, last.headers).end(last.body);
    }
    const next = this.lanes.get(a.lane) ?? 0n;
    if (a.seq !== next) return this.refuse(res, 409, "stale_seq", { lane: a.lane, expected_seq: String(next) });
    const acked = this.states[Number(a.ackSize)];
    if (!acked || !equal(acked.root, a.ackRoot) || acked.cumulative !== a.ackCumulative) return this.refuse(res, 409, "state_mismatch", { size: this.records.length });
    const method = req.method!, q = url.search.slice(1);
    if (!equal(requestHash(this.salt, method, url.pathname, q, body), a.requestHash)) return this.refuse(res, 400, "request_mismatch");
    if (url.pathname === "/v1/chat") return this.stream(res, a, sig, JSON.parse(new TextDecoder().decode(body)));
    let respBody = utf8(JSON.stringify({ item: url.pathname, n: this.records.length }));
    let amount = BigInt(price) < a.maxAmount ? BigInt(price) : a.maxAmount;
    let units = [1n, 0n, 0n, 0n];
    if (url.pathname === "/v1/json") {
      // Read as text: the count may be above 2^53.
      const total = /"total_tokens":([0-9]+)/.exec(new TextDecoder().decode(body))![1];
      respBody = utf8(`{"usage":{"total_tokens":${total}}}`);
      units = [BigInt(total), 0n, 0n, 0n];
      amount = [BigInt(total) * 2n, 500n, a.maxAmount].reduce((x, y) => (x < y ? x : y));
    }
    const trailer = url.pathname === "/v1/trailer";
    if (trailer) {
      units = [9n, 0n, 0n, 0n];
      amount = 9n;
    }
    if (dispute) {
      // Grants the whole amount back for any record proved by a valid bundle (the mock's only rule).
      const { bundle } = JSON.parse(new TextDecoder().decode(body));
      verifyBundle(bundle);
      amount = -this.records[bundle.index].outcome.amount;
      units = [0n, 0n, 0n, 0n];
      respBody = utf8(JSON.stringify({ disputed_index: bundle.index, amount: String(amount), rule: "server_error" }));
    }
    if (this.opts.overcharge) { amount += 1n; this.opts.overcharge = false; }
    const headers: Record<string, string> = {
      "content-type": "application/json", "payment-response": this.record(a, sig, units, amount, responseHash(200, respBody)),
    };
    const every = this.opts.checkpointEvery ?? 0;
    if (every && this.records.length - this.lastCheckpointSize >= every) headers["tally-checkpoint-request"] = String(this.records.length);
    this.held.set(a.lane, { seq: a.seq, requestHash: toHex(a.requestHash), headers, body: respBody });
    if (this.opts.dropNext) {
      this.opts.dropNext = false;
      return void res.socket?.destroy();
    }
    if (trailer) {
      res.writeHead(200, { ...headers, trailer: "x-units" });
      res.write(respBody);
      res.addTrailers({ "x-units": "9" });
      return void res.end();
    }
    res.writeHead(200, headers).end(respBody);
  }

  /** Appends the record and returns its PAYMENT-RESPONSE value (HTTP.md §3.3). */
  private record(a: Authorization, sig: Uint8Array, units: bigint[], amount: bigint, rh: Uint8Array): string {
    const index = this.records.length;
    const o: Outcome = {
      channelId: a.channelId, lane: a.lane, seq: a.seq, index: BigInt(index), authorizationHash: authorizationHash(a, sig),
      units, amount, cumulative: this.states[index].cumulative + amount, responseHash: rh, timeMs: BigInt(Date.now()),
    };
    const outcomeBytes = encodeOutcome(o);
    const psig = ed25519Sign(this.providerSeed, outcomeBytes);
    const bytes = encodeRecord({ authorization: a, clientSignature: sig, outcome: o });
    this.push({ bytes, sig: psig, outcome: o, auth: a });
    const value = toBase64(utf8(JSON.stringify({
      success: true, transaction: "", network: "eip155:31337", payer: "0x" + "44".repeat(20), amount: String(amount),
      extra: { receipt: { outcome: toHex(outcomeBytes), signature: toHex(psig) } },
    })));
    this.receipts.set(`${a.lane}/${a.seq}`, { index, value, busy: false });
    return value;
  }

  /**
   * A streamed paid answer (the gateway's streaming path): the upstream's events as they
   * come, then `\n\nevent: payment-response\ndata: <PAYMENT-RESPONSE>\n\n`; the receipt
   * hashes only the bytes before it and charges the usage they reported.
   */
  private async stream(res: ServerResponse, a: Authorization, sig: Uint8Array, ask: { prompt_tokens: number; completion_tokens: number }): Promise<void> {
    const end = this.opts.streamEnd;
    this.opts.streamEnd = undefined;
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const pieces = chatStream(ask.prompt_tokens, ask.completion_tokens);
    const sent: Uint8Array[] = [];
    const send = async (b: Uint8Array) => {
      sent.push(b);
      await new Promise<void>((r) => res.write(b, () => r()));
    };
    await send(pieces[0]);
    await this.opts.holdStream;
    await new Promise((r) => setTimeout(r, 5));
    if (end === "break") {
      await send(pieces[1]);
    } else for (const p of pieces.slice(1)) await send(p);
    const forwarded = concat(...sent);
    if (end === "error") {
      res.end(utf8(`\n\nevent: payment-error\ndata: ${JSON.stringify({ error: { reason: "insufficient_funds", message: "no", remaining: "0" } })}\n\n`));
      return;
    }
    const max = (x: bigint, y: bigint) => (x > y ? x : y);
    const broken = end === "break";
    const units = broken ? [0n, 0n, 0n, 0n] : [BigInt(ask.prompt_tokens), BigInt(ask.completion_tokens) + (end === "overcount" ? 1n : 0n), 0n, 0n];
    const sum = max(units[0] + 3n * units[1], 2n);
    const amount = broken ? 0n : [sum, 1000n, a.maxAmount].reduce((x, y) => (x < y ? x : y));
    const value = this.record(a, sig, units, amount, responseHash(broken ? 502 : 200, forwarded));
    if (end === "lose-end") {
      this.receipts.get(`${a.lane}/${a.seq}`)!.busy = true;
      return void res.socket?.destroy();
    }
    const last = utf8(`\n\nevent: payment-response\ndata: ${value}\n\n`);
    if (end === "cut-final" || end === "cut-after-final") {
      this.receipts.get(`${a.lane}/${a.seq}`)!.busy = true;
      await send(end === "cut-final" ? last.subarray(0, 40) : last);
      await new Promise((r) => setTimeout(r, 20));
      return void res.socket?.destroy();
    }
    res.end(last);
  }
}
