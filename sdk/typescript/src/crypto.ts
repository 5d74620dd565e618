/**
 * The primitives tally uses, all from @noble: BLAKE3 (`H`, spec/PROTOCOL.md §3), ed25519
 * with strict verification (§4.1), SHA-256 (key ids, §6.2), keccak-256 and secp256k1
 * (EIP-712, §8). Nothing here implements a primitive; it only composes the library's.
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { blake3 } from "@noble/hashes/blake3.js";
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { keccak_256 } from "@noble/hashes/sha3.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";

import { concat } from "./bytes.js";

/** `H`: BLAKE3 with 32-byte output (§3.1). */
export const H = (...parts: Uint8Array[]): Uint8Array => blake3(concat(...parts));
export const sha256Hash = (b: Uint8Array): Uint8Array => sha256(b);
export const keccak = (...parts: Uint8Array[]): Uint8Array => keccak_256(concat(...parts));

/** The public key of a 32-byte ed25519 seed. */
export const ed25519Public = (seed: Uint8Array): Uint8Array => ed25519.getPublicKey(seed);
/** RFC 8032 signature (deterministic). */
export const ed25519Sign = (seed: Uint8Array, msg: Uint8Array): Uint8Array => ed25519.sign(msg, seed);
export const randomSeed = (): Uint8Array => ed25519.utils.randomSecretKey();

const Point = ed25519.Point;
const L = Point.Fn.ORDER;

/**
 * Strict verification, spec/PROTOCOL.md §4.1: refuses a key or R that does not decode
 * canonically or is of small order, `s ≥ L`, and checks the cofactorless equation
 * `[s]B = R + [k]A` (noble's own `verify` checks the cofactored one, which accepts torsion
 * in R, so the equation is composed here from noble's point operations).
 */
export function ed25519VerifyStrict(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  if (pub.length !== 32 || sig.length !== 64) return false;
  try {
    const A = Point.fromBytes(pub, false);
    const rBytes = sig.subarray(0, 32);
    const R = Point.fromBytes(rBytes, false);
    if (A.isSmallOrder() || R.isSmallOrder()) return false;
    const s = bytesToNumberLE(sig.subarray(32));
    if (s >= L) return false;
    const k = bytesToNumberLE(sha512(concat(rBytes, pub, msg))) % L;
    const lhs = s === 0n ? Point.ZERO : Point.BASE.multiplyUnsafe(s);
    const kA = k === 0n ? Point.ZERO : A.multiplyUnsafe(k);
    return lhs.equals(R.add(kA));
  } catch {
    return false;
  }
}

/** An EIP-712 signature as the gateway takes it: `{v: 27|28, r, s}` (hex, low-s). */
export interface Eip712Sig {
  v: number;
  r: string;
  s: string;
}

/** Signs a 32-byte digest with a secp256k1 key (low-s, as the contract requires, §8.2). */
export function secpSignDigest(key: Uint8Array, digest: Uint8Array): { v: number; r: Uint8Array; s: Uint8Array } {
  const rec = secp256k1.sign(digest, key, { prehash: false, lowS: true, format: "recovered" });
  return { v: 27 + rec[0], r: rec.slice(1, 33), s: rec.slice(33, 65) };
}

/** The Ethereum address of a secp256k1 private key. */
export function ethAddress(key: Uint8Array): Uint8Array {
  const pub = secp256k1.getPublicKey(key, false);
  return keccak(pub.subarray(1)).slice(12);
}
