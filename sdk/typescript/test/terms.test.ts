/** Terms review (spec/HTTP.md §4.4) and charges (§4.1), as tally-http's `price_increases` and `charge_for`. */
import { test } from "node:test";
import assert from "node:assert/strict";

import { expectedCharge, priceFor, priceIncreases, type Price, type Terms } from "../src/terms.js";

function terms(routes: Terms["routes"], extra: Partial<Terms> = {}): Terms {
  return {
    format: "tally-terms/v2", provider_key: "00".repeat(32),
    chain: { chain_id: 31337, contract: "0x01", asset: "0x02", pay_to: "0x03" }, credit_limit: "1000", max_lanes: 8,
    checkpoint: { every_records: 10, every_seconds: 0, every_amount: "0" }, charge_server_errors: false,
    refunds: { server_errors: true, over_max: true }, max_request_bytes: 1, max_response_bytes: 1, routes, ...extra,
  };
}
const fixed = (amount: string): Price => ({ kind: "fixed", amount });
const metered = (unit: string, max: string, min?: string): Price => ({ kind: "metered", units_header: "x-tokens", unit_price: unit, max_amount: max, min_charge: min });

test("prices by first match; prefix routes match children after a slash; HEAD is priced as GET", () => {
  const t = terms([
    { method: "GET", path: "/v1/items", match: "prefix", price: fixed("10") },
    { method: "*", path: "/v1", match: "prefix", price: fixed("3") },
  ]);
  assert.deepEqual(priceFor(t, "GET", "/v1/items/7"), fixed("10"));
  assert.deepEqual(priceFor(t, "GET", "/v1/itemsx"), fixed("3"));
  assert.deepEqual(priceFor(t, "HEAD", "/v1/items"), fixed("10"));
  assert.deepEqual(priceFor(t, "GET", "/v2"), { kind: "free" });
});

test("metered charge: units × unit price, at least min_charge, at most the route's and the authorization's max", () => {
  const h = (v: string | null) => () => v;
  assert.deepEqual(expectedCharge(false, metered("2", "100", "5"), 200, h("7"), 1000n), { units: 7n, amount: 14n });
  assert.deepEqual(expectedCharge(false, metered("2", "100", "5"), 200, h("1"), 1000n), { units: 1n, amount: 5n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, h("900"), 1000n), { units: 900n, amount: 100n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, h("900"), 40n), { units: 900n, amount: 40n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, h("-3"), 1000n), { units: 0n, amount: 0n });
  assert.deepEqual(expectedCharge(false, fixed("10"), 503, h(null), 10n), { units: 0n, amount: 0n });
  assert.deepEqual(expectedCharge(true, fixed("10"), 503, h(null), 10n), { units: 1n, amount: 10n });
});

test("a lower price is no increase; a higher price, a newly priced path, a changed units header and the flags are", () => {
  const base = terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("10") }]);
  assert.deepEqual(priceIncreases(base, terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("5") }])), []);
  const up = priceIncreases(base, terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("11") }]));
  assert.ok(up.some((c) => c.what === "GET /v1/items" && c.to === "fixed 11"));
  const newly = priceIncreases(base, terms([...base.routes, { method: "POST", path: "/v1/x", match: "exact", price: fixed("1") }]));
  assert.ok(newly.some((c) => c.what === "POST /v1/x" && c.from === "free"));
  const m0 = terms([{ method: "POST", path: "/c", match: "exact", price: metered("2", "100") }]);
  const m1 = terms([{ method: "POST", path: "/c", match: "exact", price: { kind: "metered", units_header: "x-other", unit_price: "2", max_amount: "100" } }]);
  assert.equal(priceIncreases(m0, m1).length, 1);
  const flags = priceIncreases(base, { ...base, charge_server_errors: true, refunds: { server_errors: false, over_max: false }, chain: { ...base.chain, pay_to: "0x04" } });
  assert.deepEqual(flags.map((c) => c.what), ["charge_server_errors", "refunds.server_errors", "refunds.over_max", "chain"]);
  assert.deepEqual(priceIncreases(base, { ...base, credit_limit: "1", max_lanes: 1 }), []);
});
