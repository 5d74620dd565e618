/**
 * The relay client (spec/HTTP.md §12): what it posts, the answer it accepts, and refusals as
 * typed errors, against a fetch that plays the gateway.
 */
import { test } from "node:test";
import assert from "node:assert/strict";

import { TallyError, toHex } from "../src/bytes.js";
import { RefusedError } from "../src/errors.js";
import { type DepositDomains, gaslessChannelId, signGaslessOpen, signGaslessTopUp } from "../src/gasless.js";
import { openGasless, topUpGasless } from "../src/relay.js";

const key = new Uint8Array(32).fill(7);
const d: DepositDomains = {
  chainId: 31337, contract: "0x" + "11".repeat(20),
  token: { name: "Test Token", version: "1", address: "0x" + "22".repeat(20) },
};
const open = signGaslessOpen(key, d, {
  payee: "0x" + "33".repeat(20), token: d.token.address, amount: 5_000_000n, signer: "0x" + "44".repeat(20),
  withdrawDelay: 3600, salt: new Uint8Array(32).fill(9),
}, { kind: "eip3009", validAfter: 0, validBefore: 2_000_000_000 });
const channel = toHex(gaslessChannelId(d, open));
const TX = "ab".repeat(32);

/** A fetch answering `status` with `body`, recording what it was sent. */
function gateway(status: number, body: unknown) {
  const seen: { url: string; init: RequestInit }[] = [];
  const f = (async (url: string, init: RequestInit) => {
    seen.push({ url, init });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  }) as unknown as typeof fetch;
  return { f, seen };
}

test("openGasless posts the signed body to /tally/v1/relay/open and returns the answer", async () => {
  const { f, seen } = gateway(200, { channel_id: channel, transaction: TX, block: 12, gas_used: 150000 });
  const got = await openGasless("http://127.0.0.1:1/", open, { fetch: f, domains: d });
  assert.deepEqual(got, { channel_id: channel, transaction: TX, block: 12, gas_used: 150000 });
  assert.equal(seen[0].url, "http://127.0.0.1:1/tally/v1/relay/open");
  assert.equal(seen[0].init.method, "POST");
  assert.equal(seen[0].init.body, JSON.stringify(open));
});

test("an answer naming another channel, or not of the relay's shape, is not believed", async () => {
  const other = { channel_id: "cd".repeat(32), transaction: TX, block: 1, gas_used: 1 };
  await assert.rejects(openGasless("http://x", open, { fetch: gateway(200, other).f, domains: d }), TallyError);
  for (const bad of [{ channel_id: channel, transaction: "zz", block: 1, gas_used: 1 }, { channel_id: channel, transaction: TX, block: -1, gas_used: 1 }, []]) {
    await assert.rejects(openGasless("http://x", open, { fetch: gateway(200, bad).f }), TallyError);
  }
  const notJson = (async () => new Response("<html>", { status: 200 })) as unknown as typeof fetch;
  await assert.rejects(openGasless("http://x", open, { fetch: notJson }), TallyError);
});

test("refusals are RefusedErrors carrying the reason and its fields", async () => {
  const body = { error: { reason: "relay_refused", message: "simulation reverted", why: "ChannelExists" } };
  await assert.rejects(openGasless("http://x", open, { fetch: gateway(422, body).f }),
    (e) => e instanceof RefusedError && e.reason === "relay_refused" && e.fields.why === "ChannelExists" && e.status === 422);
  const limited = { error: { reason: "rate_limited", message: "busy" } };
  await assert.rejects(openGasless("http://x", open, { fetch: gateway(429, limited).f }),
    (e) => e instanceof RefusedError && e.reason === "rate_limited");
});

test("topUpGasless posts to /relay/topup and checks the channel", async () => {
  const top = signGaslessTopUp(key, d, channel, 7n, new Uint8Array(32).fill(1),
    { kind: "permit", permitNonce: 0n, deadline: 2_000_000_000 });
  const { f, seen } = gateway(200, { channel_id: channel, transaction: TX, block: 3, gas_used: 90000 });
  assert.equal((await topUpGasless("http://x", top, { fetch: f })).block, 3);
  assert.equal(seen[0].url, "http://x/tally/v1/relay/topup");
  assert.equal(seen[0].init.body, JSON.stringify(top));
  const wrong = { channel_id: "cd".repeat(32), transaction: TX, block: 3, gas_used: 1 };
  await assert.rejects(topUpGasless("http://x", top, { fetch: gateway(200, wrong).f }), TallyError);
});
