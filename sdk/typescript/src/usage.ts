/**
 * The units a response reports, read as crates/tally-http usage.rs reads them (spec/HTTP.md
 * §4.1 meters): the gateway charges by that reader, so the client counts what it saw the
 * same way and checks the receipt's units and amount exactly.
 *
 * - `header`: a plain decimal (surrounding spaces allowed) that fits u64;
 * - `json`: an RFC 6901 pointer into the JSON body, a non-negative integer that fits u64;
 * - `sse`: the same pointer into the data of server-sent events (WHATWG HTML §9.2.6: lines
 *   end with CR, LF or CRLF, `data` fields join with LF, a blank line dispatches); the last
 *   event whose data is a JSON object with a count there wins; events over 64 KiB and an
 *   event the stream did not close are not counted;
 * - `trailer`: fetch does not expose trailers, so a trailer meter reads as no report here
 *   (see `UsageReader.seesAll`).
 *
 * Anything else (absent, negative, fractional, text, out of range) is no report: 0.
 */
import { NO_UNITS, METERS, type Units } from "./messages.js";
import { asU64, parseJson, pointer } from "./json.js";
import { type Meter, type Price, sourceOf } from "./terms.js";

/** The longest server-sent event scanned for usage (tally-http `MAX_EVENT_BYTES`). */
export const MAX_EVENT_BYTES = 64 * 1024;

/** A header's units: a plain decimal that fits u64, else `undefined`. */
export function parseUnits(text: string | null | undefined): bigint | undefined {
  const t = (text ?? "").replace(/^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g, "");
  if (!/^[0-9]+$/.test(t)) return undefined;
  const v = BigInt(t);
  return v < 1n << 64n ? v : undefined;
}

/** The count at `ptr` in a JSON document, if it is a non-negative integer that fits u64. */
export function jsonUnits(doc: Uint8Array, ptr: string): bigint | undefined {
  try {
    return asU64(pointer(parseJson(doc), ptr));
  } catch {
    return undefined;
  }
}

/** Reads a response's units for a route's meters, fed as the response passes. */
export class UsageReader {
  private readonly found: (bigint | undefined)[] = [undefined, undefined, undefined, undefined];
  private body: Uint8Array[] | null;
  private bodyLen = 0;
  private readonly events: SseEvents | null;

  constructor(private readonly meters: Meter[], private readonly limit = Number.MAX_SAFE_INTEGER) {
    const any = (k: string) => meters.some((m) => sourceOf(m.from)[0] === k);
    this.body = any("json") ? [] : null;
    this.events = any("sse") ? new SseEvents() : null;
  }

  /** A reader for the meters of `price` (none for a fixed or free price). */
  static forPrice(price: Price, limit?: number): UsageReader {
    return new UsageReader(price.kind === "metered" ? price.meters : [], limit);
  }

  /** Whether every meter can be seen by a fetch client (trailers cannot). */
  get seesAll(): boolean {
    return this.meters.every((m) => sourceOf(m.from)[0] !== "trailer");
  }

  /** The response head: header meters (fetch joins repeated fields, which then read as none). */
  headers(get: (name: string) => string | null): void {
    this.meters.slice(0, METERS).forEach((m, i) => {
      const [kind, at] = sourceOf(m.from);
      if (kind !== "header") return;
      const u = parseUnits(get(at));
      if (u !== undefined) this.found[i] = u;
    });
  }

  /** The next bytes of the body. */
  chunk(bytes: Uint8Array): void {
    if (this.body) {
      if (this.bodyLen + bytes.length > this.limit) this.body = null;
      else {
        this.body.push(bytes.slice());
        this.bodyLen += bytes.length;
      }
    }
    this.events?.feed(bytes, (data) => this.noteEvent(data));
  }

  /** An event's data: every SSE meter whose pointer it has takes that count (last wins). */
  private noteEvent(data: Uint8Array): void {
    if (data[0] !== 0x7b) return;
    let doc;
    try {
      doc = parseJson(data);
    } catch {
      return;
    }
    this.meters.slice(0, METERS).forEach((m, i) => {
      const [kind, at] = sourceOf(m.from);
      if (kind !== "sse") return;
      const u = asU64(pointer(doc, at));
      if (u !== undefined) this.found[i] = u;
    });
  }

  /** The count per meter (0 where nothing was reported), once the body has ended. */
  finish(): Units {
    if (this.body) {
      const all = new Uint8Array(this.bodyLen);
      let at = 0;
      for (const b of this.body) {
        all.set(b, at);
        at += b.length;
      }
      this.meters.slice(0, METERS).forEach((m, i) => {
        const [kind, ptr] = sourceOf(m.from);
        if (kind === "json") this.found[i] = jsonUnits(all, ptr);
      });
    }
    return this.found.map((u, i) => u ?? NO_UNITS()[i]);
  }
}

const LF = 0x0a, CR = 0x0d;

/** The `data` of server-sent events as they complete (tally-http usage.rs `SseEvents`). */
class SseEvents {
  private line: number[] = [];
  /** The line was cut past MAX_EVENT_BYTES: skip to its end. */
  private lineCut = false;
  private data: number[] = [];
  /** The event outgrew MAX_EVENT_BYTES: it is not scanned. */
  private eventCut = false;
  private hasData = false;
  /** The last byte was a CR, so an LF starting the next chunk ends nothing new. */
  private afterCr = false;

  feed(bytes: Uint8Array, onEvent: (data: Uint8Array) => void): void {
    let i = 0;
    if (this.afterCr && bytes[0] === LF) i = 1;
    this.afterCr = false;
    let start = i;
    for (; i < bytes.length; i++) {
      const b = bytes[i];
      if (b !== LF && b !== CR) continue;
      this.push(bytes.subarray(start, i));
      this.endLine(onEvent);
      if (b === CR) {
        if (bytes[i + 1] === LF) i++;
        else if (i + 1 === bytes.length) this.afterCr = true;
      }
      start = i + 1;
    }
    this.push(bytes.subarray(start));
  }

  private push(bytes: Uint8Array): void {
    if (this.lineCut) return;
    if (this.line.length + bytes.length > MAX_EVENT_BYTES) {
      this.line = [];
      this.lineCut = true;
      this.eventCut = true;
    } else for (const b of bytes) this.line.push(b);
  }

  private endLine(onEvent: (data: Uint8Array) => void): void {
    const line = this.line;
    this.line = [];
    const cut = this.lineCut;
    this.lineCut = false;
    if (line.length === 0 && !cut) {
      if (this.hasData && !this.eventCut) onEvent(Uint8Array.from(this.data));
      this.data = [];
      this.hasData = false;
      this.eventCut = false;
      return;
    }
    const colon = line.indexOf(0x3a);
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? [] : line.slice(colon + 1);
    if (field.length !== 4 || String.fromCharCode(...field) !== "data" || this.eventCut) return;
    if (value[0] === 0x20) value = value.slice(1);
    if (this.data.length + value.length + 1 > MAX_EVENT_BYTES) {
      this.eventCut = true;
      this.data = [];
      return;
    }
    if (this.hasData) this.data.push(LF);
    for (const b of value) this.data.push(b);
    this.hasData = true;
  }
}
