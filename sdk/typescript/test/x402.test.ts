/** The tally scheme registered in the official x402 client, paying the mock gateway through @x402/fetch. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { x402Client } from "@x402/core/client";
import { PaymentPayloadV2Schema, PaymentRequirementsV2Schema } from "@x402/core/schemas";
import { wrapFetchWithPayment } from "@x402/fetch";

import { TallyClient, TallyScheme, encodeHeader, requirementsFor, type TallyResponse } from "../src/index.js";
import { MockGateway } from "./mockgw.js";

const channelId = "cd".repeat(32);
const keys = { sessionKey: new Uint8Array(32).fill(3), checkpointKey: new Uint8Array(32).fill(4) };

async function setup(payFirst: boolean) {
  const gw = new MockGateway();
  await gw.start();
  const tally = await TallyClient.connect({ baseUrl: gw.base, channelId, ...keys });
  const scheme = new TallyScheme(tally, { payFirst });
  const client = x402Client.fromConfig({ schemes: [{ network: "eip155:*", client: scheme }], spendControls: { allowedAssets: [scheme.allowedAsset()] } });
  return { gw, tally, pay: wrapFetchWithPayment(scheme.fetch, client) };
}

test("registered as one scheme, @x402/fetch pays on the first request when the terms price the route", async () => {
  const { gw, tally, pay } = await setup(true);
  try {
    const res = (await pay(`${gw.base}/v1/items/9`)) as TallyResponse;
    assert.equal(res.status, 200);
    assert.ok(res.receipt);
    assert.equal(gw.payments.length, 1);
    assert.equal(tally.head().size, 1n);
    assert.ok(PaymentPayloadV2Schema.safeParse(gw.payments[0]).success, "the official schema accepts PAYMENT-SIGNATURE");
  } finally {
    await gw.stop();
  }
});

test("after a 402, the official client builds the payload: accepted = the advertised requirements", async () => {
  const { gw, tally, pay } = await setup(false);
  try {
    const res = (await pay(`${gw.base}/v1/items/7?q=1`, { method: "POST", body: "hello" })) as TallyResponse;
    assert.equal(res.status, 200);
    assert.ok(res.receipt, "the receipt was verified against the body");
    assert.equal(gw.payments.length, 1);
    const p = gw.payments[0];
    assert.ok(PaymentPayloadV2Schema.safeParse(p).success, JSON.stringify(PaymentPayloadV2Schema.safeParse(p)));
    assert.ok(PaymentRequirementsV2Schema.safeParse(p.accepted).success);
    assert.equal(p.accepted.amount, "10");
    assert.equal(p.resource.url, "/v1/items/7?q=1");
    assert.equal(tally.head().size, 1n);
    // A second request of the same client reuses the lane's next seq.
    const again = (await pay(`${gw.base}/v1/items/8`)) as TallyResponse;
    assert.equal(again.status, 200);
    assert.equal(gw.records[1].auth.ackSize, 1n);
  } finally {
    await gw.stop();
  }
});

test("createPaymentPayload without the tally transport fails clearly instead of signing a guess", async () => {
  const { gw, tally } = await setup(false);
  try {
    const scheme = new TallyScheme(tally);
    const client = x402Client.fromConfig({ schemes: [{ network: "eip155:*", client: scheme }], spendControls: { allowedAssets: [scheme.allowedAsset()] } });
    const pay = wrapFetchWithPayment(globalThis.fetch, client);
    await assert.rejects(pay(`${gw.base}/v1/items/1`), /scheme\.fetch/);
    assert.equal(gw.payments.length, 0);
  } finally {
    await gw.stop();
  }
});

test("requirements_mismatch (HTTP.md §3.2): a stale copied `accepted` is replaced by the route's requirement and signed again", async () => {
  const { gw, tally } = await setup(true);
  try {
    const scheme = new TallyScheme(tally);
    const accepted = requirementsFor(tally.terms, { kind: "fixed", amount: "10" });
    const copied = { x402Version: 2, accepted: { ...accepted, amount: "11" }, payload: { authorization: "", signature: "" } };
    const res = await scheme.fetch(`${gw.base}/v1/items/3`, { headers: { "payment-signature": encodeHeader(copied) } });
    assert.equal(res.status, 200);
    assert.ok(res.receipt);
    assert.deepEqual(gw.payments.map((p) => p.accepted.amount), ["11", "10"], "refused once, then paid under the route's requirement");
    assert.equal(res.receipt!.outcome.seq, 0n, "the refused attempt did not use up the seq");
    // The client's own derivation matches the gateway's member for member, metered routes too.
    const chat = requirementsFor(tally.terms, tally.terms.terms.routes[1].price);
    assert.equal(chat.amount, "1000");
    assert.deepEqual(Object.keys(chat), ["scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"]);
    assert.deepEqual(Object.keys(chat.extra), ["contract", "provider_key", "terms_hash", "terms_url"]);
  } finally {
    await gw.stop();
  }
});
