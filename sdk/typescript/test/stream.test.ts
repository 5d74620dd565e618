/**
 * Streamed paid responses: the final-event splitter (crates/tally-http stream.rs) and the
 * streaming paid fetch against the mock gateway's event-stream route.
 */
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  FinalEventSplitter, MisbehaviorError, RefusedError, TallyClient, concat, finalEvent, toHex, utf8, type FinalEvent,
} from "../src/index.js";
import { H } from "../src/crypto.js";
import { chatStream, MockGateway, type MockOptions } from "./mockgw.js";

function split(chunks: Uint8Array[]): { body: Uint8Array; end?: FinalEvent } {
  const s = new FinalEventSplitter();
  const parts = chunks.map((c) => s.feed(c));
  const { rest, end } = s.finish();
  return { body: concat(...parts, rest), end };
}

test("splitter: the body and its final event come apart in any chunking", () => {
  const body = utf8("data: a\n\nevent: payment-x\ndata: fake\n\ndata: b\n\n");
  const all = concat(body, finalEvent("payment-response", "eyJzdWNjZXNzIjp0cnVlfQ=="));
  for (let a = 0; a < all.length; a++) {
    for (let b = a; b < all.length; b++) {
      const got = split([all.subarray(0, a), all.subarray(a, b), all.subarray(b)]);
      assert.deepEqual(got.body, body, `cuts ${a} ${b}`);
      assert.deepEqual(got.end, { kind: "receipt", data: "eyJzdWNjZXNzIjp0cnVlfQ==" });
    }
  }
});

test("splitter: an unfinished body has no final event; a payment-error is one; long lookalikes are released", () => {
  assert.deepEqual(split([utf8("data: a\n\ndata: b")]), { body: utf8("data: a\n\ndata: b"), end: undefined });
  const cut = concat(utf8("data: a\n\n"), finalEvent("payment-response", "abc").subarray(0, 20));
  assert.equal(split([cut]).end, undefined);
  assert.deepEqual(split([cut]).body, cut);
  const e = split([utf8("x"), finalEvent("payment-error", '{"error":"e"}')]);
  assert.deepEqual(e, { body: utf8("x"), end: { kind: "error", data: '{"error":"e"}' } });
  const long = concat(utf8("\n\nevent: payment-"), new Uint8Array(16 * 1024 + 10).fill(0x78));
  assert.equal(new FinalEventSplitter().feed(long).length, long.length - 16, "only what could start the marker is held");
  // Bytes arrive as they come: a chunk with no marker in sight is released but for its tail.
  const text = "data: hello, streaming world\n\n";
  assert.equal(new FinalEventSplitter().feed(utf8(text)).length, text.length - 16);
});

const channelId = "cd".repeat(32);
async function setup(opts: MockOptions = {}) {
  const gw = new MockGateway(opts);
  await gw.start();
  const client = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey: new Uint8Array(32).fill(1), checkpointKey: new Uint8Array(32).fill(2) });
  return { gw, client };
}
const ask = (prompt: number, completion: number) => ({ method: "POST", body: JSON.stringify({ prompt_tokens: prompt, completion_tokens: completion }) });
const upstream = (p: number, c: number) => concat(...chatStream(p, c));

test("a streamed paid answer: chunks arrive before the end; the receipt covers exactly them and charges the usage seen", async () => {
  let release!: () => void;
  const { gw, client } = await setup({ holdStream: new Promise<void>((r) => { release = r; }) });
  try {
    const s = await client.stream("/v1/chat", ask(7, 12));
    assert.equal(s.status, 200);
    const first = await s.chunk();
    assert.ok(first && first.length > 0, "the first bytes come while the upstream is still held");
    assert.equal(gw.records.length, 0, "nothing recorded yet");
    release();
    const parts = [first!];
    for await (const c of s) parts.push(c);
    const paid = await s.finish();
    const body = concat(...parts);
    assert.deepEqual(body, upstream(7, 12), "exactly the upstream's bytes, the final event taken off");
    assert.deepEqual(paid.receipt!.outcome.units, [7n, 12n, 0n, 0n]);
    assert.equal(paid.receipt!.outcome.amount, 7n + 36n);
    assert.equal(paid.exchange!.response_body_hash, toHex(H(body)));
    assert.equal(paid.broken, false);
    assert.equal(paid.receipt!.payer, "0x" + "44".repeat(20), "PAYMENT-RESPONSE's payer");
    assert.equal(client.head().size, 1n, "the record is mirrored");
    // A buffered fetch of a streamed route reads it whole, the same way.
    const r = await client.fetch("/v1/chat", ask(1, 0));
    assert.deepEqual(new Uint8Array(await r.arrayBuffer()), upstream(1, 0));
    assert.equal(r.receipt!.outcome.amount, 2n, "min_charge");
    assert.equal(client.head().size, 2n);
  } finally {
    await gw.stop();
  }
});

test("a stream the upstream broke is recorded as a 502 over the bytes forwarded: free, flagged broken", async () => {
  const { gw, client } = await setup({ streamEnd: "break" });
  try {
    const s = await client.stream("/v1/chat", ask(7, 12));
    const parts: Uint8Array[] = [];
    for await (const c of s) parts.push(c);
    const paid = await s.finish();
    assert.equal(paid.broken, true);
    assert.equal(paid.exchange!.status, 502);
    assert.equal(paid.receipt!.outcome.amount, 0n);
    assert.deepEqual(paid.receipt!.outcome.units, [0n, 0n, 0n, 0n]);
    assert.deepEqual(concat(...parts), concat(...chatStream(7, 12).slice(0, 2)));
  } finally {
    await gw.stop();
  }
});

test("a lost end: the receipt is fetched from the receipts endpoint (waiting out lane_busy) and verified", async () => {
  const { gw, client } = await setup({ streamEnd: "lose-end" });
  try {
    const s = await client.stream("/v1/chat", ask(3, 4));
    const parts: Uint8Array[] = [];
    await assert.rejects(async () => { for await (const c of s) parts.push(c); });
    const paid = await s.finish();
    assert.deepEqual(concat(...parts), upstream(3, 4));
    assert.equal(paid.receipt!.outcome.amount, 3n + 12n);
    assert.equal(gw.receipts.get("0/0")!.busy, false, "it asked twice: lane_busy, then the receipt");
    assert.equal(client.head().size, 1n);
    await client.fetch("/v1/items/1");
    assert.equal(client.head().size, 2n, "the lane moved on");
  } finally {
    await gw.stop();
  }
});

test("a cut inside the final event: its start is not body; the receipt comes from the endpoint", async () => {
  const { gw, client } = await setup({ streamEnd: "cut-final" });
  try {
    const s = await client.stream("/v1/chat", ask(3, 4));
    const parts: Uint8Array[] = [];
    await assert.rejects(async () => { for await (const c of s) parts.push(c); });
    const paid = await s.finish();
    assert.deepEqual(concat(...parts), upstream(3, 4));
    assert.equal(paid.receipt!.outcome.amount, 15n);
    assert.equal(gw.receipts.get("0/0")!.busy, false, "fetched from the endpoint");
  } finally {
    await gw.stop();
  }
});

test("a cut right after a whole final event: its receipt is used as is", async () => {
  const { gw, client } = await setup({ streamEnd: "cut-after-final" });
  try {
    const s = await client.stream("/v1/chat", ask(3, 4));
    const parts: Uint8Array[] = [];
    await assert.rejects(async () => { for await (const c of s) parts.push(c); });
    const paid = await s.finish();
    assert.deepEqual(concat(...parts), upstream(3, 4));
    assert.equal(paid.receipt!.outcome.amount, 15n);
    assert.equal(gw.receipts.get("0/0")!.busy, true, "the endpoint was not needed");
  } finally {
    await gw.stop();
  }
});

test("a buffered fetch of a stream whose end is lost: the receipts endpoint completes it, the lane is released", async () => {
  const { gw, client } = await setup({ streamEnd: "lose-end" });
  try {
    const r = await client.fetch("/v1/chat", ask(2, 1));
    assert.deepEqual(new Uint8Array(await r.arrayBuffer()), upstream(2, 1));
    assert.equal(r.receipt!.outcome.amount, 5n);
    const next = await Promise.all([1, 2, 3, 4, 5].map((i) => client.fetch(`/v1/items/${i}`)));
    assert.ok(next.every((x) => x.receipt), "every lane is free again");
    assert.equal(client.head().size, 6n);
  } finally {
    await gw.stop();
  }
});

test("a payment-error final event is a refusal: nothing recorded, the seq is not used up", async () => {
  const { gw, client } = await setup({ streamEnd: "error" });
  try {
    const s = await client.stream("/v1/chat", ask(3, 4));
    for await (const _ of s) { /* drain */ }
    await assert.rejects(s.finish(), (e) => e instanceof RefusedError && e.reason === "insufficient_funds");
    const r = await client.fetch("/v1/items/1");
    assert.equal(r.receipt!.outcome.seq, 0n);
  } finally {
    await gw.stop();
  }
});

test("a streamed receipt counting more units than the stream reported stops the client", async () => {
  const { gw, client } = await setup({ streamEnd: "overcount" });
  try {
    const s = await client.stream("/v1/chat", ask(3, 4));
    for await (const _ of s) { /* drain */ }
    await assert.rejects(s.finish(), (e) => e instanceof MisbehaviorError && /units \[3, 5, 0, 0\]/.test(e.message));
    await assert.rejects(client.fetch("/v1/items/1"), MisbehaviorError);
  } finally {
    await gw.stop();
  }
});

test("a JSON-metered answer: units from the body at the pointer, exact above 2^53, capped by max_amount", async () => {
  const { gw, client } = await setup();
  try {
    const r = await client.fetch("/v1/json", { method: "POST", body: JSON.stringify({ total_tokens: 21 }) });
    assert.deepEqual(r.receipt!.outcome.units, [21n, 0n, 0n, 0n]);
    assert.equal(r.receipt!.outcome.amount, 42n);
    const big = await client.fetch("/v1/json", { method: "POST", body: '{"total_tokens":9007199254740993}' });
    assert.deepEqual(big.receipt!.outcome.units, [9007199254740993n, 0n, 0n, 0n]);
    assert.equal(big.receipt!.outcome.amount, 500n);
    // Free routes stream as a plain answer.
    const free = await client.stream("/other");
    for await (const _ of free) { /* drain */ }
    assert.equal((await free.finish()).receipt, undefined);
  } finally {
    await gw.stop();
  }
});

test("a trailer meter: fetch cannot see it, so it counts 0 and a charging receipt stops the client, unless trustTrailerUnits", async () => {
  const { gw, client } = await setup();
  try {
    await assert.rejects(client.fetch("/v1/trailer"), (e) => e instanceof MisbehaviorError && /units \[9, 0, 0, 0\], expected \[0, 0, 0, 0\]/.test(e.message));
  } finally {
    await gw.stop();
  }
  const gw2 = new MockGateway();
  await gw2.start();
  try {
    const trusting = await TallyClient.connect({
      baseUrl: gw2.base, channelId, sessionKey: new Uint8Array(32).fill(1), checkpointKey: new Uint8Array(32).fill(2), trustTrailerUnits: true,
    });
    const r = await trusting.fetch("/v1/trailer");
    assert.deepEqual([r.receipt!.outcome.units, r.receipt!.outcome.amount], [[9n, 0n, 0n, 0n], 9n]);
  } finally {
    await gw2.stop();
  }
});
