/**
 * Byte helpers for the canonical encoding (spec/PROTOCOL.md §2): fixed-width little-endian
 * integers, lower-case hex (a decoder refuses upper case, §2) and standard base64.
 */

/** A protocol-level failure: bad bytes, a bad signature, a misbehaving peer. */
export class TallyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TallyError";
  }
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

const HEX = "0123456789abcdef";

/** Lower-case hex, the only spelling tally accepts (§2). */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += HEX[x >> 4] + HEX[x & 15];
  return s;
}

/** Decodes lower-case hex; upper case, odd length or a wrong length are refused. */
export function fromHex(s: string, len?: number): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/.test(s)) throw new TallyError(`not lower-case hex: ${s.slice(0, 16)}…`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  if (len !== undefined && out.length !== len) throw new TallyError(`expected ${len} bytes, got ${out.length}`);
  return out;
}

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b).toString("base64");
}

/** Strict standard base64 with padding: anything that does not re-encode identically is refused. */
export function fromBase64(s: string): Uint8Array {
  const b = new Uint8Array(Buffer.from(s, "base64"));
  if (toBase64(b) !== s) throw new TallyError("not canonical base64");
  return b;
}

export const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Unsigned little-endian integer of `width` bytes; refuses values that do not fit. */
export function uintLE(v: bigint | number, width: number): Uint8Array {
  let x = BigInt(v);
  if (x < 0n || x >= 1n << BigInt(8 * width)) throw new TallyError(`${v} does not fit u${8 * width}`);
  const out = new Uint8Array(width);
  for (let i = 0; i < width; i++) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/** Two's-complement little-endian i128 (§5.2 `amount`). */
export function i128LE(v: bigint): Uint8Array {
  const min = -(1n << 127n);
  if (v < min || v >= 1n << 127n) throw new TallyError(`${v} does not fit i128`);
  return uintLE(v < 0n ? v + (1n << 128n) : v, 16);
}

export function readUintLE(b: Uint8Array, at: number, width: number): bigint {
  let x = 0n;
  for (let i = width - 1; i >= 0; i--) x = (x << 8n) | BigInt(b[at + i]);
  return x;
}

export function readI128LE(b: Uint8Array, at: number): bigint {
  const x = readUintLE(b, at, 16);
  return x >= 1n << 127n ? x - (1n << 128n) : x;
}

export function u64BE(v: bigint | number): Uint8Array {
  return uintLE(v, 8).reverse();
}

/** A canonical decimal amount (spec/HTTP.md §1): digits, no sign, no leading zeros. */
export function parseAmount(s: unknown, signed = false): bigint {
  const re = signed ? /^(?:0|-?[1-9][0-9]*)$/ : /^(?:0|[1-9][0-9]*)$/;
  if (typeof s !== "string" || !re.test(s)) throw new TallyError(`not a canonical amount: ${String(s)}`);
  return BigInt(s);
}
