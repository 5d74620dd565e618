/**
 * The Merkle tree of a channel's log (spec/PROTOCOL.md §3.2, RFC 9162 §2.1 with BLAKE3) and
 * its proofs (§7). The same code runs over SHA-256 ("conformance mode") for the RFC 6962
 * vectors.
 */
import { equal } from "./bytes.js";
import { H, sha256Hash } from "./crypto.js";
import { concat } from "./bytes.js";

export interface TreeHasher {
  empty(): Uint8Array;
  leaf(data: Uint8Array): Uint8Array;
  node(left: Uint8Array, right: Uint8Array): Uint8Array;
}

export const blake3Tree: TreeHasher = {
  empty: () => H(),
  leaf: (d) => H(Uint8Array.of(0), d),
  node: (l, r) => H(Uint8Array.of(1), l, r),
};

export const sha256Tree: TreeHasher = {
  empty: () => sha256Hash(new Uint8Array()),
  leaf: (d) => sha256Hash(concat(Uint8Array.of(0), d)),
  node: (l, r) => sha256Hash(concat(Uint8Array.of(1), l, r)),
};

/** MTH over leaf hashes: `k` is the largest power of two strictly below `n` (§3.2). */
export function rootOf(h: TreeHasher, leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return h.empty();
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return h.node(rootOf(h, leaves.slice(0, k)), rootOf(h, leaves.slice(k)));
}

/**
 * The right edge of the tree (one perfect subtree root per set bit of the size): appends
 * in O(log n) and gives the root at the current size, so the mirror never rehashes its log.
 */
export class Frontier {
  private stack: { size: bigint; hash: Uint8Array }[] = [];
  size = 0n;
  constructor(private readonly h: TreeHasher = blake3Tree) {}

  push(leaf: Uint8Array): void {
    let cur = { size: 1n, hash: leaf };
    while (this.stack.length && this.stack[this.stack.length - 1].size === cur.size) {
      const left = this.stack.pop()!;
      cur = { size: cur.size * 2n, hash: this.h.node(left.hash, cur.hash) };
    }
    this.stack.push(cur);
    this.size += 1n;
  }

  root(): Uint8Array {
    if (this.stack.length === 0) return this.h.empty();
    let r = this.stack[this.stack.length - 1].hash;
    for (let i = this.stack.length - 2; i >= 0; i--) r = this.h.node(this.stack[i].hash, r);
    return r;
  }
}

const bitLen = (x: bigint): number => x.toString(2).replace(/^0+/, "").length;
const popcount = (x: bigint): number => [...x.toString(2)].filter((c) => c === "1").length;
const bit = (x: bigint, i: number): boolean => ((x >> BigInt(i)) & 1n) === 1n;

/** §7.1: `inner = bitlen(i XOR (n-1))`, `border = popcount(i >> inner)`. */
function decompose(index: bigint, size: bigint): [number, number] {
  const inner = bitLen(index ^ (size - 1n));
  return [inner, popcount(index >> BigInt(inner))];
}

function chainInner(h: TreeHasher, seed: Uint8Array, proof: Uint8Array[], index: bigint): Uint8Array {
  proof.forEach((p, i) => { seed = bit(index, i) ? h.node(p, seed) : h.node(seed, p); });
  return seed;
}

function chainInnerRight(h: TreeHasher, seed: Uint8Array, proof: Uint8Array[], index: bigint): Uint8Array {
  proof.forEach((p, i) => { if (bit(index, i)) seed = h.node(p, seed); });
  return seed;
}

function chainBorderRight(h: TreeHasher, seed: Uint8Array, proof: Uint8Array[]): Uint8Array {
  for (const p of proof) seed = h.node(p, seed);
  return seed;
}

/** RFC 9162 §2.1.3.2 after the exact-length check of §7.1; `true` iff the proof holds. */
export function verifyInclusion(
  h: TreeHasher, index: bigint, size: bigint, leaf: Uint8Array, proof: Uint8Array[], root: Uint8Array,
): boolean {
  if (index >= size || leaf.length !== 32 || proof.some((p) => p.length !== 32)) return false;
  const [inner, border] = decompose(index, size);
  if (proof.length !== inner + border) return false;
  const r = chainBorderRight(h, chainInner(h, leaf, proof.slice(0, inner), index), proof.slice(inner));
  return equal(r, root);
}

/** RFC 9162 §2.1.4.2 after §7.2's checks (`m = 0` and `m > n` refused, exact length). */
export function verifyConsistency(
  h: TreeHasher, m: bigint, n: bigint, proof: Uint8Array[], root1: Uint8Array, root2: Uint8Array,
): boolean {
  if (m === 0n || m > n || proof.some((p) => p.length !== 32)) return false;
  if (m === n) return proof.length === 0 && equal(root1, root2);
  let shift = 0;
  while (!bit(m, shift)) shift++;
  const [inner0, border] = decompose(m - 1n, n);
  const inner = inner0 - shift;
  let seed: Uint8Array, rest: Uint8Array[];
  if (m === 1n << BigInt(shift)) {
    seed = root1;
    rest = proof;
  } else {
    if (proof.length === 0) return false;
    seed = proof[0];
    rest = proof.slice(1);
  }
  if (rest.length !== inner + border) return false;
  const mask = (m - 1n) >> BigInt(shift);
  const r1 = chainBorderRight(h, chainInnerRight(h, seed, rest.slice(0, inner), mask), rest.slice(inner));
  const r2 = chainBorderRight(h, chainInner(h, seed, rest.slice(0, inner), mask), rest.slice(inner));
  return equal(r1, root1) && equal(r2, root2);
}
