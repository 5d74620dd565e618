/**
 * Streamed paid responses (crates/tally-http stream.rs, crates/tally-client client/stream.rs):
 * a `text/event-stream` answer carries no `PAYMENT-RESPONSE` header; after the upstream's
 * last byte the gateway appends exactly `\n\nevent: payment-response\ndata: <value>\n\n`
 * (or `event: payment-error` with the error JSON when nothing was recorded). The receipt's
 * response hash covers only the bytes before it. A stream the upstream broke is recorded as
 * a 502 over the bytes forwarded; a client that lost the end asks
 * `GET /tally/v1/channels/{id}/receipts?lane=L&seq=S` (`lane_busy` while still recording).
 */
import { blake3 } from "@noble/hashes/blake3.js";

import { TallyError, concat, equal, uintLE, utf8 } from "./bytes.js";
import { RefusedError } from "./errors.js";
import type { TallyClient } from "./client.js";
import { PREFIX } from "./messages.js";
import { H } from "./crypto.js";
import { parsePaymentResponse } from "./wire.js";

/** The event carrying the receipt, and the one saying nothing was recorded. */
export const RECEIPT_EVENT = "payment-response";
export const ERROR_EVENT = "payment-error";
/** Every final event starts with these bytes (they close whatever the upstream left open). */
const MARKER = utf8("\n\nevent: payment-");
/** A final event is a header value or an error body: anything longer is the upstream's. */
const MAX_FINAL = 16 * 1024;
/** The status a stream the upstream broke is recorded with. */
export const BROKEN = 502;

export type FinalEvent = { kind: "receipt"; data: string } | { kind: "error"; data: string };

/** The bytes the gateway appends after the body. */
export const finalEvent = (name: string, data: string): Uint8Array => utf8(`\n\nevent: ${name}\ndata: ${data}\n\n`);

function find(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * Splits a streamed body from its final event as bytes arrive (tally-http
 * `FinalEventSplitter`): releases body bytes at once, holding back only what could still be
 * the start of the final event.
 */
export class FinalEventSplitter {
  private held: Uint8Array = new Uint8Array(0);

  /** Takes the next bytes received; returns the bytes that are now certainly body. */
  feed(bytes: Uint8Array): Uint8Array {
    this.held = concat(this.held, bytes);
    const out: Uint8Array[] = [];
    for (;;) {
      const pos = find(this.held, MARKER);
      if (pos < 0) {
        const keep = Math.min(MARKER.length - 1, this.held.length);
        out.push(this.held.slice(0, this.held.length - keep));
        this.held = this.held.slice(this.held.length - keep);
        return concat(...out);
      }
      out.push(this.held.slice(0, pos));
      this.held = this.held.slice(pos);
      if (!this.cannotBeFinal()) return concat(...out);
      // The upstream's own bytes: release the first and look again.
      out.push(this.held.slice(0, 1));
      this.held = this.held.slice(1);
    }
  }

  /** Held bytes (at a marker) that are too long, or a complete event followed by more. */
  private cannotBeFinal(): boolean {
    if (this.held.length > MAX_FINAL) return true;
    const after = this.held.subarray(MARKER.length);
    const end = find(after, utf8("\n\n"));
    return end >= 0 && end + 2 < after.length;
  }

  /**
   * The transport broke before the stream's end. Held bytes that are a whole final event
   * still carry the receipt; held bytes that begin with the marker are the start of the final
   * event, never body (the receipt from the receipts endpoint covers only the upstream's
   * bytes); anything else held is body. (crates/tally-client hands every held byte over as
   * body here, so a cut inside the final event fails its receipt check.)
   */
  cut(): { rest: Uint8Array; end?: FinalEvent } {
    const end = parseFinal(this.held);
    if (end) return { rest: new Uint8Array(0), end };
    const started = this.held.length >= MARKER.length && equal(this.held.subarray(0, MARKER.length), MARKER);
    return { rest: started ? new Uint8Array(0) : this.held };
  }

  /** The stream ended: the rest of the body, and the final event if the held bytes are one. */
  finish(): { rest: Uint8Array; end?: FinalEvent } {
    const end = parseFinal(this.held);
    return end ? { rest: new Uint8Array(0), end } : { rest: this.held };
  }
}

function parseFinal(held: Uint8Array): FinalEvent | undefined {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(held);
  } catch {
    return undefined;
  }
  const head = "\n\nevent: ";
  if (!text.startsWith(head) || !text.endsWith("\n\n") || text.length < head.length + 2) return undefined;
  const rest = text.slice(head.length, text.length - 2);
  const at = rest.indexOf("\ndata: ");
  if (at < 0) return undefined;
  const name = rest.slice(0, at), data = rest.slice(at + "\ndata: ".length);
  if (/[\n\r]/.test(data)) return undefined;
  if (name === RECEIPT_EVENT) return { kind: "receipt", data };
  if (name === ERROR_EVENT) return { kind: "error", data };
  return undefined;
}

/** Whether an answer carries its receipt after its body: an event stream without the header. */
export function streamed(headers: Headers): boolean {
  const type = (headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  return type === "text/event-stream" && !headers.has("payment-response");
}

/** Incremental BLAKE3 of the body bytes handed to the caller. */
export class BodyHasher {
  private readonly h = blake3.create();
  update(b: Uint8Array): void {
    this.h.update(b);
  }
  digest(): Uint8Array {
    return this.h.digest();
  }
}

/** PROTOCOL.md §3.3 response hash from the body's hash. */
export const responseHashWithBodyHash = (status: number, bodyHash: Uint8Array): Uint8Array =>
  H(PREFIX.response, uintLE(status, 2), bodyHash);

/** Whether a receipt's outcome hashes a 502 over these bytes: the upstream broke the stream. */
export function recordedBroken(header: string, status: number, bodyHash: Uint8Array): boolean {
  if (status === BROKEN) return false;
  try {
    return equal(parsePaymentResponse(header).outcome.responseHash, responseHashWithBodyHash(BROKEN, bodyHash));
  } catch {
    return false;
  }
}

/**
 * The `PAYMENT-RESPONSE` value of (lane, seq) from the receipts endpoint, for a stream whose
 * end was lost; waits while the gateway is still recording it (`lane_busy`), up to the
 * client's timeout.
 */
export async function fetchReceipt(c: TallyClient, lane: number, seq: bigint): Promise<string> {
  const until = Date.now() + c.timeoutMs;
  for (let wait = 0; ; wait++) {
    try {
      const found = await c.getJson(c.url(`/receipts?lane=${lane}&seq=${seq}`));
      if (found?.lane !== lane || String(found?.seq) !== String(seq) || typeof found?.payment_response !== "string") {
        throw new TallyError(`receipts endpoint answered for another request: ${JSON.stringify(found).slice(0, 200)}`);
      }
      return found.payment_response;
    } catch (e) {
      if (!(e instanceof RefusedError && e.reason === "lane_busy" && Date.now() < until)) throw e;
      await new Promise((r) => setTimeout(r, 10 * 2 ** Math.min(wait, 6)));
    }
  }
}
