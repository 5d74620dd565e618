/** spec/vectors/blake3 (roots, inclusion, consistency) and spec/vectors/rfc6962 (SHA-256 mode). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join, relative, sep } from "node:path";

import { fromBase64, toBase64, utf8 } from "../src/bytes.js";
import { Frontier, blake3Tree, rootOf, sha256Tree, verifyConsistency, verifyInclusion, type TreeHasher } from "../src/merkle.js";
import { jsonFiles, readJson, repoRoot } from "./repo.js";

const vectors = join(repoRoot(), "spec", "vectors");

/** Base64 that may not be canonical or 32 bytes (placeholders): `null` makes the case a rejection. */
function b64(s: string): Uint8Array | null {
  try {
    return fromBase64(s);
  } catch {
    return null;
  }
}

/** `true` iff the checker accepts the case. */
function judge(h: TreeHasher, kind: string, c: any): boolean {
  const proof = (c.proof ?? []).map(b64);
  if (proof.some((p: Uint8Array | null) => p === null || p.length !== 32)) return false;
  if (kind === "inclusion") {
    const leaf = b64(c.leafHash), root = b64(c.root);
    if (!leaf || !root) return false;
    return verifyInclusion(h, BigInt(c.leafIdx), BigInt(c.treeSize), leaf, proof, root);
  }
  const r1 = b64(c.root1), r2 = b64(c.root2);
  if (!r1 || !r2) return false;
  return verifyConsistency(h, BigInt(c.size1), BigInt(c.size2), proof, r1, r2);
}

function runDir(h: TreeHasher, dir: string): { accepted: number; rejected: number } {
  let accepted = 0, rejected = 0;
  const wrong: string[] = [];
  for (const file of jsonFiles(dir)) {
    const kind = relative(dir, file).split(sep)[0];
    if (kind !== "inclusion" && kind !== "consistency") continue;
    const c = readJson(file);
    const ok = judge(h, kind, c);
    if (c.wantErr) rejected++; else accepted++;
    if (ok === c.wantErr) wrong.push(`${relative(dir, file)}: wantErr=${c.wantErr} but ${ok ? "accepted" : "rejected"}`);
  }
  assert.deepEqual(wrong, []);
  return { accepted, rejected };
}

test("BLAKE3 roots of `tally leaf <i>` (incremental and recursive)", () => {
  const roots = readJson(join(vectors, "blake3", "roots.json")).roots;
  assert.ok(roots.length > 10);
  const f = new Frontier();
  const leaves: Uint8Array[] = [];
  for (const { size, root } of roots) {
    while (leaves.length < size) {
      const leaf = blake3Tree.leaf(utf8(`tally leaf ${leaves.length}`));
      leaves.push(leaf);
      f.push(leaf);
    }
    assert.equal(toBase64(f.root()), root, `size ${size}`);
    assert.equal(toBase64(rootOf(blake3Tree, leaves)), root, `size ${size}`);
  }
});

test("BLAKE3 inclusion and consistency vectors get the wanted verdict", () => {
  const { accepted, rejected } = runDir(blake3Tree, join(vectors, "blake3"));
  assert.ok(accepted >= 10 && rejected >= 50, `${accepted} accepted, ${rejected} rejected`);
});

test("RFC 6962 vectors (SHA-256 conformance mode) get the wanted verdict", () => {
  const { accepted, rejected } = runDir(sha256Tree, join(vectors, "rfc6962"));
  assert.ok(accepted >= 10 && rejected >= 100, `${accepted} accepted, ${rejected} rejected`);
});

test("inclusion paths built from the leaves verify at every index of every size up to 17", async () => {
  const { inclusionPath } = await import("../src/bundle.js");
  const leaves = Array.from({ length: 17 }, (_, i) => blake3Tree.leaf(utf8(`tally leaf ${i}`)));
  for (let n = 1; n <= 17; n++) {
    const root = rootOf(blake3Tree, leaves.slice(0, n));
    for (let i = 0; i < n; i++) {
      const path = inclusionPath(blake3Tree, leaves.slice(0, n), i);
      assert.ok(verifyInclusion(blake3Tree, BigInt(i), BigInt(n), leaves[i], path, root), `${i} of ${n}`);
    }
  }
});
