/** x402 header payloads (spec/HTTP.md §3). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { PaymentPayloadV2Schema, PaymentRequirementsV2Schema } from "@x402/core/schemas";

import { encodeHeader, parsePaymentResponse, paymentPayload, requirementsFor, tallyRequirements } from "../src/wire.js";
import { decodeAuthorization, fromHex, parseTerms, toBase64, utf8, type Authorization } from "../src/index.js";
import { readJson, repoRoot } from "./repo.js";

const v = readJson(join(repoRoot(), "spec", "vectors", "messages.json"));
const auth: Authorization = decodeAuthorization(fromHex(v.authorization.bytes));
const terms = parseTerms(utf8(JSON.stringify({
  format: "tally-terms/v2", provider_key: v.keys.provider_public,
  chain: { chain_id: 31337, contract: "0x" + "11".repeat(20), asset: "0x" + "22".repeat(20), pay_to: "0x" + "33".repeat(20) },
  credit_limit: "1000", max_lanes: 4, checkpoint: { every_records: 1, every_seconds: 0, every_amount: "0" },
  charge_server_errors: false, refunds: { server_errors: true, over_max: true }, max_request_bytes: 1, max_response_bytes: 1,
  routes: [{ method: "GET", path: "/v1", match: "prefix", price: { kind: "fixed", amount: "10" } }],
})));

test("PAYMENT-SIGNATURE is an x402 v2 PaymentPayload with the full requirements, under the header limit", () => {
  const accepted = requirementsFor(terms, { kind: "fixed", amount: "10" });
  assert.ok(PaymentRequirementsV2Schema.safeParse(accepted).success);
  const p = paymentPayload(accepted, auth, fromHex(v.authorization.client_signature));
  assert.ok(PaymentPayloadV2Schema.safeParse(p).success);
  assert.equal(p.payload.authorization, v.authorization.bytes);
  assert.ok(encodeHeader(p).length <= 1404, `${encodeHeader(p).length} bytes`);
});

test("PAYMENT-RESPONSE is an x402 v2 SettleResponse: the receipt at extra.receipt, payer and amount returned", () => {
  const receipt = { outcome: v.outcome.bytes, signature: v.outcome.provider_signature };
  const settle = { success: true, transaction: "", network: "eip155:31337", payer: "0x" + "44".repeat(20), amount: "1200", extra: { receipt } };
  const r = parsePaymentResponse(toBase64(utf8(JSON.stringify(settle))));
  assert.equal(r.outcome.amount, 1200n);
  assert.deepEqual(r.outcome.units, [120n, 360n, 0n, 0n]);
  assert.equal(r.payer, settle.payer);
  assert.equal(r.amount, "1200");
  // The pre-v2 spot (`receipt` at the top) is no longer read.
  const old = { success: true, scheme: "tally", network: "eip155:31337", transaction: "", receipt };
  assert.throws(() => parsePaymentResponse(toBase64(utf8(JSON.stringify(old)))), /extra.receipt/);
  assert.throws(() => parsePaymentResponse(toBase64(utf8(JSON.stringify({ ...settle, success: false })))));
  const upper = { ...settle, extra: { receipt: { outcome: v.outcome.bytes.toUpperCase(), signature: receipt.signature } } };
  assert.throws(() => parsePaymentResponse(toBase64(utf8(JSON.stringify(upper)))));
});

test("the tally entry of a PAYMENT-REQUIRED is found among others", () => {
  const accepted = requirementsFor(terms, { kind: "fixed", amount: "10" });
  const pr = { x402Version: 2, error: "payment_required", resource: { url: "/v1/a" }, accepts: [{ ...accepted, scheme: "exact" }, accepted] };
  assert.deepEqual(tallyRequirements(toBase64(utf8(JSON.stringify(pr)))), accepted);
});
