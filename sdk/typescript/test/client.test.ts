/** The paying client against the in-process mock gateway (test/mockgw.ts). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  MemoryStore, MisbehaviorError, RefusedError, TallyClient, TermsRaisedError, decodeAuthorization, fromHex, toHex,
  type MirrorStore, verifyBundle,
} from "../src/index.js";
import { FileStore } from "../src/node.js";
import { MockGateway, type MockOptions } from "./mockgw.js";

const channelId = "ab".repeat(32);
const sessionKey = new Uint8Array(32).fill(1);
const checkpointKey = new Uint8Array(32).fill(2);

async function setup(opts: MockOptions = {}, store?: MirrorStore) {
  const gw = new MockGateway(opts);
  await gw.start();
  const client = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store });
  return { gw, client };
}

test("pays on the first request (no 402), with accepted = the advertised requirements, and verifies the receipt", async () => {
  const { gw, client } = await setup();
  try {
    const r = await client.fetch(`${gw.base}/v1/items/1?x=2`);
    assert.equal(r.status, 200);
    assert.equal((await r.json()).item, "/v1/items/1");
    assert.ok(r.receipt);
    assert.equal(r.receipt!.outcome.amount, 10n);
    assert.equal(gw.payments.length, 1, "exactly one request, already paid");
    const p = gw.payments[0];
    assert.equal(p.x402Version, 2);
    assert.deepEqual(Object.keys(p.accepted).sort(), ["amount", "asset", "extra", "maxTimeoutSeconds", "network", "payTo", "scheme"]);
    assert.equal(p.accepted.amount, "10");
    assert.deepEqual(Object.keys(p.payload).sort(), ["authorization", "signature"]);
    assert.equal(decodeAuthorization(fromHex(p.payload.authorization)).maxAmount, 10n);
    assert.equal(client.head().size, 1n);
    assert.equal(toHex(client.head().root), toHex(gw.states[1].root));
  } finally {
    await gw.stop();
  }
});

test("acknowledges its verified state: each authorization signs the mirror's head", async () => {
  const { gw, client } = await setup();
  try {
    for (let i = 0; i < 3; i++) await client.fetch(`/v1/items/${i}`);
    const acks = gw.records.map((r) => Number(r.auth.ackSize));
    assert.deepEqual(acks, [0, 1, 2]);
    assert.equal(gw.records[2].auth.ackCumulative, 20n);
  } finally {
    await gw.stop();
  }
});

test("concurrent requests travel over several lanes and all land in the mirror", async () => {
  const { gw, client } = await setup({ maxLanes: 4 });
  try {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => client.fetch(`/v1/items/${i}`)));
    assert.ok(rs.every((r) => r.status === 200 && r.receipt));
    const lanes = new Set(gw.records.map((r) => r.auth.lane));
    assert.ok(lanes.size > 1, `only lanes ${[...lanes]}`);
    assert.ok([...lanes].every((l) => l < 4));
    assert.equal(client.head().size, 20n);
    assert.equal(toHex(client.head().root), toHex(gw.states[20].root));
    assert.equal(client.head().cumulative, 200n);
  } finally {
    await gw.stop();
  }
});

test("free routes are sent without a payment", async () => {
  const { gw, client } = await setup();
  try {
    const r = await client.fetch("/free");
    assert.equal(r.status, 200);
    assert.equal(r.receipt, undefined);
    assert.equal(gw.payments.length, 0);
  } finally {
    await gw.stop();
  }
});

test("answers TALLY-CHECKPOINT-REQUEST with a signed checkpoint on its next request, and posts one on demand", async () => {
  const { gw, client } = await setup({ checkpointEvery: 2 });
  try {
    await client.fetch("/v1/items/a");
    await client.fetch("/v1/items/b"); // the gateway asks for a checkpoint at size 2
    assert.equal(gw.checkpointHeaders, 0);
    await client.fetch("/v1/items/c");
    assert.equal(gw.checkpointHeaders, 1);
    assert.equal(gw.lastCheckpointSize, 2);
    const note = await client.checkpoint();
    assert.match(note, /^tally\/channel\/(ab){32}\n3\n/);
    assert.match(note, /\u2014 tally-provider /);
    for (let i = 0; i < 3; i++) verifyBundle(client.proofBundle(i));
  } finally {
    await gw.stop();
  }
});

test("stale_seq from another client on the same channel: resyncs its mirror and pays at the next seq", async () => {
  const gw = new MockGateway();
  await gw.start();
  try {
    const a = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, lanes: 1 });
    const b = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, lanes: 1 });
    await a.fetch("/v1/items/a");
    await a.fetch("/v1/items/b");
    const r = await b.fetch("/v1/items/c");
    assert.equal(r.status, 200);
    assert.equal(gw.records[2].auth.seq, 2n);
    assert.equal(b.head().size, 3n);
    assert.equal(toHex(b.head().root), toHex(gw.states[3].root));
  } finally {
    await gw.stop();
  }
});

test("checkpoint_required: signs a checkpoint and retries the same seq", async () => {
  const { gw, client } = await setup();
  try {
    await client.fetch("/v1/items/a");
    gw.opts.refuse = [{ reason: "checkpoint_required", status: 402, fields: { size: 1 } }];
    const r = await client.fetch("/v1/items/b");
    assert.equal(r.status, 200);
    assert.equal(gw.checkpoints.length, 1);
    assert.equal(gw.records[1].auth.seq, 1n);
  } finally {
    await gw.stop();
  }
});

test("insufficient_funds is returned with its fields; the seq is not used up", async () => {
  const { gw, client } = await setup();
  try {
    gw.opts.refuse = [{ reason: "insufficient_funds", status: 402, fields: { remaining: "3" } }];
    await assert.rejects(client.fetch("/v1/items/a"), (e: unknown) =>
      e instanceof RefusedError && e.reason === "insufficient_funds" && e.fields.remaining === "3");
    assert.equal(client.head().size, 0n);
    await client.fetch("/v1/items/a");
    assert.equal(gw.records[0].auth.seq, 0n);
  } finally {
    await gw.stop();
  }
});

test("terms_changed: a lower price is adopted silently; a raised one refuses before signing", async () => {
  const { gw, client } = await setup();
  try {
    gw.termsBytes = gw.render("5");
    const r = await client.fetch("/v1/items/a");
    assert.equal(r.receipt!.outcome.amount, 5n);
    gw.termsBytes = gw.render("50");
    const sent = gw.payments.length;
    await assert.rejects(client.fetch("/v1/items/b"), TermsRaisedError);
    await assert.rejects(client.fetch("/v1/items/c"), TermsRaisedError);
    assert.equal(gw.payments.length, sent + 1, "only the refused attempt under the old terms was sent");
    assert.equal(client.termsRaised()[0].to, "fixed 50");
    await client.acceptTerms();
    assert.equal((await client.fetch("/v1/items/c")).receipt!.outcome.amount, 50n);
  } finally {
    await gw.stop();
  }
});

test("a receipt charging more than the terms give stops the client", async () => {
  const { gw, client } = await setup({ overcharge: true });
  try {
    await assert.rejects(client.fetch("/v1/items/a"), MisbehaviorError);
    await assert.rejects(client.fetch("/v1/items/b"), MisbehaviorError);
    assert.equal(gw.payments.length, 1, "nothing more is signed once stopped");
  } finally {
    await gw.stop();
  }
});

test("the file-backed mirror survives a restart and refuses a tampered file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tally-ts-"));
  const gw = new MockGateway();
  await gw.start();
  try {
    const a = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store: new FileStore(dir) });
    for (let i = 0; i < 3; i++) await a.fetch(`/v1/items/${i}`);
    const b = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store: new FileStore(dir) });
    assert.equal(b.head().size, 3n);
    assert.equal(toHex(b.head().root), toHex(a.head().root));
    await b.fetch("/v1/items/3");
    assert.equal(gw.records[3].auth.ackSize, 3n);
    const path = join(dir, "records.jsonl");
    const lines = (await readFile(path, "utf8")).split("\n");
    const rec = JSON.parse(lines[1]);
    rec.record = rec.record.slice(0, -2) + (rec.record.endsWith("00") ? "01" : "00");
    lines[1] = JSON.stringify(rec);
    await writeFile(path, lines.join("\n"));
    await assert.rejects(TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store: new FileStore(dir) }));
  } finally {
    await gw.stop();
  }
});

test("a provider that lost records is refused at connect", async () => {
  const store = new MemoryStore();
  const { gw, client } = await setup({}, store);
  try {
    await client.fetch("/v1/items/a");
    gw.records = [];
    gw.states = gw.states.slice(0, 1);
    await assert.rejects(TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store }), MisbehaviorError);
  } finally {
    await gw.stop();
  }
});

test("a lost answer: the same request sent again reuses its lane and seq and is answered as a retry, never charged twice", async () => {
  const { gw, client } = await setup({ maxLanes: 2, dropNext: true });
  try {
    await assert.rejects(client.fetch("/v1/items/lost"));
    assert.equal(gw.records.length, 1, "the gateway recorded it");
    const again = await client.fetch("/v1/items/lost");
    assert.equal(again.status, 200);
    assert.equal(gw.records.length, 1, "the resend was a retry");
    assert.equal(client.head().size, 1n);
    assert.equal(client.head().cumulative, 10n);
  } finally {
    await gw.stop();
  }
});

test("a lost answer that is never resent: the lane learns its seq from the provider's log", async () => {
  const { gw, client } = await setup({ maxLanes: 1, dropNext: true });
  try {
    await assert.rejects(client.fetch("/v1/items/lost"));
    const next = await client.fetch("/v1/items/other");
    assert.equal(next.status, 200);
    assert.deepEqual(gw.records.map((r) => r.auth.seq), [0n, 1n]);
    assert.equal(client.head().size, 2n);
    assert.equal(toHex(client.head().root), toHex(gw.states[2].root));
  } finally {
    await gw.stop();
  }
});

test("the request hash covers the path and query as sent (percent-encoded, dot segments removed), with a body", async () => {
  const { gw, client } = await setup();
  try {
    const r = await client.fetch("/v1/x/../items/a b?q=1 2", { method: "POST", body: "payload", headers: { "Accept-Encoding": "gzip" } });
    assert.equal(r.status, 200, await r.clone().text());
    assert.equal((await r.json()).item, "/v1/items/a%20b");
  } finally {
    await gw.stop();
  }
});

test("restore_required after a promise-mode crash: uploads the records beyond the durable head, then pays", async () => {
  const { gw, client } = await setup({ maxLanes: 2 });
  try {
    for (let i = 0; i < 5; i++) await client.fetch(`/v1/items/${i}`);
    const before = toHex(client.head().root);
    gw.crash(2);
    const r = await client.fetch("/v1/items/after");
    assert.equal(r.status, 200);
    assert.deepEqual(gw.restores, [{ appended: 3, complete: true }]);
    assert.equal(toHex(gw.states[5].root), before, "the provider's log is the mirror again");
    assert.equal(client.head().size, 6n);
    assert.equal(toHex(client.head().root), toHex(gw.states[6].root));
  } finally {
    await gw.stop();
  }
});

test("a restore at connect: the provider's head is at or below the mirror", async () => {
  const store = new MemoryStore();
  const { gw, client } = await setup({}, store);
  try {
    for (let i = 0; i < 3; i++) await client.fetch(`/v1/items/${i}`);
    gw.crash(1);
    const again = await TallyClient.connect({ baseUrl: gw.base, channelId, sessionKey, checkpointKey, store });
    assert.deepEqual(gw.restores, [{ appended: 2, complete: true }]);
    assert.equal(again.head().size, 3n);
    assert.equal(gw.records.length, 3);
  } finally {
    await gw.stop();
  }
});

test("a dispute: a max_amount = 0 payment carrying a bundle and the exchange; the credit record is verified and mirrored", async () => {
  const { gw, client } = await setup();
  try {
    const r = await client.fetch("/v1/items/bad", { method: "POST", body: "x" });
    await client.fetch("/v1/items/ok");
    await client.checkpoint();
    const granted = await client.dispute(0, r.exchange!);
    assert.deepEqual(granted, { disputed_index: 0, amount: "-10", rule: "server_error" });
    const credit = gw.records[2];
    assert.equal(credit.auth.maxAmount, 0n);
    assert.equal(credit.outcome.amount, -10n);
    assert.equal(gw.payments[2].accepted.amount, "0");
    assert.deepEqual([client.head().size, client.head().cumulative], [3n, 10n]);
    assert.equal(r.exchange!.path, "/v1/items/bad");
    assert.equal(r.exchange!.status, 200);
  } finally {
    await gw.stop();
  }
});
