/**
 * A strict JSON reader for metering (spec/HTTP.md §4.1 `json` and `sse` meters). The
 * gateway reads units with serde_json, so the client must accept exactly the documents it
 * accepts and read integers exactly: `JSON.parse` rounds integers above 2^53, accepts lone
 * surrogate escapes and any nesting depth, so it cannot be used here.
 *
 * What serde_json refuses is refused here too: invalid UTF-8, control characters in
 * strings, lone surrogates, leading zeros, numbers that overflow an f64, nesting deeper than
 * 127 (its recursion limit of 128), and anything after the value but whitespace. Objects keep
 * the last of duplicate keys, as serde_json's map does.
 */
import { TallyError } from "./bytes.js";

/** A number as written, so integers are read exactly. */
export class JsonNumber {
  constructor(readonly raw: string) {}
}
export type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | Map<string, JsonValue>;

const MAX_DEPTH = 127;
const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** Parses `bytes` as one JSON document; throws on anything serde_json would refuse. */
export function parseJson(bytes: Uint8Array): JsonValue {
  const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  const p = new Reader(text);
  const v = p.value(0);
  p.ws();
  if (p.i !== text.length) throw p.err("trailing characters");
  return v;
}

class Reader {
  i = 0;
  constructor(readonly s: string) {}

  err(why: string): TallyError {
    return new TallyError(`json at ${this.i}: ${why}`);
  }

  ws(): void {
    while (this.i < this.s.length && WS.has(this.s.charCodeAt(this.i))) this.i++;
  }

  value(depth: number): JsonValue {
    this.ws();
    const c = this.s[this.i];
    if (c === "{" || c === "[") {
      if (depth + 1 > MAX_DEPTH) throw this.err("recursion limit");
      this.i++;
      return c === "{" ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === '"') return this.string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (this.s.startsWith(word, this.i)) {
        this.i += word.length;
        return v;
      }
    }
    return this.number();
  }

  object(depth: number): Map<string, JsonValue> {
    const m = new Map<string, JsonValue>();
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return m;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') throw this.err("expected a key");
      const k = this.string();
      this.ws();
      if (this.s[this.i++] !== ":") throw this.err("expected ':'");
      m.set(k, this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") return m;
      if (c !== ",") throw this.err("expected ',' or '}'");
    }
  }

  array(depth: number): JsonValue[] {
    const a: JsonValue[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return a;
    }
    for (;;) {
      a.push(this.value(depth));
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") return a;
      if (c !== ",") throw this.err("expected ',' or ']'");
    }
  }

  string(): string {
    this.i++;
    let out = "";
    for (;;) {
      if (this.i >= this.s.length) throw this.err("unterminated string");
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x22) return out;
      if (c < 0x20) throw this.err("control character in string");
      if (c !== 0x5c) {
        out += String.fromCharCode(c);
        continue;
      }
      const e = this.s[this.i++];
      const simple: Record<string, string> = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
      if (e in simple) out += simple[e];
      else if (e === "u") out += this.unicode();
      else throw this.err("bad escape");
    }
  }

  hex4(): number {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) throw this.err("bad \\u escape");
    this.i += 4;
    return parseInt(h, 16);
  }

  /** `\uXXXX`, a surrogate pair joined; a lone surrogate is an error (as serde_json). */
  unicode(): string {
    const hi = this.hex4();
    if (hi >= 0xdc00 && hi <= 0xdfff) throw this.err("lone trailing surrogate");
    if (hi < 0xd800 || hi > 0xdbff) return String.fromCharCode(hi);
    if (this.s.slice(this.i, this.i + 2) !== "\\u") throw this.err("lone leading surrogate");
    this.i += 2;
    const lo = this.hex4();
    if (lo < 0xdc00 || lo > 0xdfff) throw this.err("lone leading surrogate");
    return String.fromCharCode(hi, lo);
  }

  number(): JsonNumber {
    const re = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    if (!m || m[0] === "") throw this.err("expected a value");
    this.i += m[0].length;
    if (/^[0-9]/.test(this.s[this.i] ?? "")) throw this.err("invalid number");
    // serde_json refuses a number an f64 cannot hold (integers above u64 are read as f64).
    if (!Number.isFinite(Number(m[0]))) throw this.err("number out of range");
    return new JsonNumber(m[0]);
  }
}

/**
 * RFC 6901 lookup as serde_json's `Value::pointer`: `""` is the whole document; array
 * indexes are decimal without a sign or leading zero.
 */
export function pointer(v: JsonValue, ptr: string): JsonValue | undefined {
  if (ptr === "") return v;
  if (!ptr.startsWith("/")) return undefined;
  let cur: JsonValue | undefined = v;
  for (const raw of ptr.slice(1).split("/")) {
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (cur instanceof Map) cur = cur.get(token);
    else if (Array.isArray(cur)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token)) return undefined;
      cur = cur[Number(token)];
    } else return undefined;
    if (cur === undefined) return undefined;
  }
  return cur;
}

/** A count: a non-negative integer that fits u64 (serde_json `as_u64`), else `undefined`. */
export function asU64(v: JsonValue | undefined): bigint | undefined {
  if (!(v instanceof JsonNumber) || !/^(0|[1-9][0-9]*)$/.test(v.raw)) return undefined;
  const n = BigInt(v.raw);
  return n < 1n << 64n ? n : undefined;
}
