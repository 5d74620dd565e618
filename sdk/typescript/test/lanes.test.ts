/** The lane pool (spec/PROTOCOL.md §5.4), as crates/tally-client's lanes tests. */
import { test } from "node:test";
import assert from "node:assert/strict";

import { LanePool } from "../src/lanes.js";
import { parseTerms, utf8 } from "../src/index.js";

const soon = <T>(p: Promise<T>, ms = 50) => Promise.race([p.then(() => "done"), new Promise((r) => setTimeout(() => r("waiting"), ms))]);

test("lanes are leased once and come back with their seq", async () => {
  const pool = new LanePool(2, (lane) => BigInt(lane) * 10n);
  const a = await pool.lease("x");
  const b = await pool.lease("x");
  assert.deepEqual([a.slot.lane, b.slot.lane, b.slot.nextSeq], [0, 1, 10n]);
  const third = pool.lease("x");
  assert.equal(await soon(third), "waiting");
  a.slot.nextSeq = 1n;
  a.release();
  const again = await third;
  assert.deepEqual([again.slot.lane, again.slot.nextSeq], [0, 1n]);
});

test("a resend of an unanswered request waits for its lane and seq; others prefer other lanes", async () => {
  const pool = new LanePool(2, () => 0n);
  const a = await pool.lease("other");
  a.unanswered(4n, "lost");
  const lane = a.slot.lane;
  a.release();
  const b = await pool.lease("other");
  assert.notEqual(b.slot.lane, lane);
  const c = await pool.lease("lost");
  assert.deepEqual([c.slot.lane, c.slot.unanswered], [lane, { seq: 4n, request: "lost" }]);
  b.release();
  const waiting = pool.lease("lost");
  assert.equal(await soon(waiting), "waiting", "the resend took another lane");
  c.answered("lost", 5n);
  assert.equal(c.slot.unanswered, null);
  c.release();
  assert.equal((await waiting).slot.nextSeq, 5n);
});

test("a terms document with an unknown field is refused", () => {
  assert.throws(() => parseTerms(utf8(JSON.stringify({ format: "tally-terms/v2", surprise: 1 }))), /unknown fields surprise/);
});
