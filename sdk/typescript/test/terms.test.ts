/** Terms review (spec/HTTP.md §4.4) and charges (§4.1), as tally-http's `price_increases` and `charge_for`. */
import { test } from "node:test";
import assert from "node:assert/strict";

import { expectedCharge, parseTerms, priceFor, priceIncreases, type Price, type Terms } from "../src/terms.js";
import { TallyError, utf8 } from "../src/bytes.js";

function terms(routes: Terms["routes"], extra: Partial<Terms> = {}): Terms {
  return {
    format: "tally-terms/v2", provider_key: "00".repeat(32),
    chain: { chain_id: 31337, contract: "0x01", asset: "0x02", pay_to: "0x03" }, credit_limit: "1000", max_lanes: 8,
    checkpoint: { every_records: 10, every_seconds: 0, every_amount: "0" }, charge_server_errors: false,
    refunds: { server_errors: true, over_max: true }, max_request_bytes: 1, max_response_bytes: 1, routes, ...extra,
  };
}
const fixed = (amount: string): Price => ({ kind: "fixed", amount });
const metered = (unit: string, max: string, min?: string): Price =>
  ({ kind: "metered", meters: [{ name: "units", unit_price: unit, from: { header: "x-tokens" } }], max_amount: max, ...(min ? { min_charge: min } : {}) });
const tokens: Price = {
  kind: "metered", max_amount: "1000", min_charge: "2", meters: [
    { name: "input", unit_price: "1", from: { sse: "/usage/prompt_tokens" } },
    { name: "output", unit_price: "3", from: { sse: "/usage/completion_tokens" } },
  ],
};
const u = (...xs: number[]) => [0, 1, 2, 3].map((i) => BigInt(xs[i] ?? 0));

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
  assert.deepEqual(expectedCharge(false, metered("2", "100", "5"), 200, u(7), 1000n), { units: u(7), amount: 14n });
  assert.deepEqual(expectedCharge(false, metered("2", "100", "5"), 200, u(1), 1000n), { units: u(1), amount: 5n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, u(900), 1000n), { units: u(900), amount: 100n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, u(900), 40n), { units: u(900), amount: 40n });
  assert.deepEqual(expectedCharge(false, metered("2", "100"), 200, u(), 1000n), { units: u(), amount: 0n });
  assert.deepEqual(expectedCharge(false, fixed("10"), 503, u(), 10n), { units: u(), amount: 0n });
  assert.deepEqual(expectedCharge(true, fixed("10"), 503, u(), 10n), { units: u(1), amount: 10n });
  assert.deepEqual(expectedCharge(false, fixed("10"), 200, u(5, 5), 10n), { units: u(1), amount: 10n }, "a fixed price is one call");
});

test("per-meter charge (tally-http meter.rs): each meter priced, then the minimum and both caps; 5xx free", () => {
  assert.equal(expectedCharge(false, tokens, 200, u(10, 20), 1n << 100n).amount, 10n + 60n);
  assert.equal(expectedCharge(false, tokens, 200, u(), 1n << 100n).amount, 2n, "the minimum");
  assert.equal(expectedCharge(false, tokens, 200, u(10, 20), 50n).amount, 50n, "the authorization");
  assert.equal(expectedCharge(false, tokens, 200, u(1000, 1000), 1n << 100n).amount, 1000n, "the route");
  const max = (1n << 64n) - 1n;
  assert.equal(expectedCharge(false, tokens, 200, [max, max, max, max], 1n << 100n).amount, 1000n);
  assert.deepEqual(expectedCharge(false, tokens, 502, u(10, 20), 1000n), { units: u(), amount: 0n });
  assert.deepEqual(expectedCharge(true, tokens, 502, u(10, 20), 1000n), { units: u(10, 20), amount: 70n });
});

const doc = (price: unknown) => utf8(JSON.stringify({ ...terms([]), routes: [{ method: "POST", path: "/c", match: "exact", price }] }));

test("terms: the units_header shorthand reads as one header meter named units; bad meters are refused", () => {
  const short = parseTerms(doc({ kind: "metered", units_header: "x-tokens", unit_price: "2", max_amount: "40" }));
  assert.deepEqual(short.terms.routes[0].price, metered("2", "40"));
  const long = parseTerms(doc(tokens));
  assert.deepEqual(long.terms.routes[0].price, tokens);
  const m = (from: unknown, name = "a") => ({ name, unit_price: "1", from });
  for (const bad of [
    { kind: "metered", max_amount: "1" },
    { kind: "metered", units_header: "x", max_amount: "1" },
    { kind: "metered", meters: [], max_amount: "1" },
    { kind: "metered", meters: [m({ json: "usage" })], max_amount: "1" },
    { kind: "metered", meters: [m({ header: "X-Tokens" })], max_amount: "1" },
    { kind: "metered", meters: [m({ header: "a" }), m({ header: "b" })], max_amount: "1" },
    { kind: "metered", meters: [m({ header: "a" })], units_header: "x", unit_price: "1", max_amount: "1" },
    { kind: "metered", meters: [m({ header: "a" }, "a"), m({ header: "b" }, "b"), m({ header: "c" }, "c"), m({ header: "d" }, "d"), m({ header: "e" }, "e")], max_amount: "1" },
    { kind: "metered", meters: [m({ header: "a", json: "/x" })], max_amount: "1" },
    { kind: "metered", meters: [m({ body: "/x" })], max_amount: "1" },
  ]) {
    assert.throws(() => parseTerms(doc(bad)), TallyError, JSON.stringify(bad));
  }
});

test("a lower price is no increase; a higher price, a newly priced path, a changed units header and the flags are", () => {
  const base = terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("10") }]);
  assert.deepEqual(priceIncreases(base, terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("5") }])), []);
  const up = priceIncreases(base, terms([{ method: "GET", path: "/v1/items", match: "prefix", price: fixed("11") }]));
  assert.ok(up.some((c) => c.what === "GET /v1/items" && c.to === "fixed 11"));
  const newly = priceIncreases(base, terms([...base.routes, { method: "POST", path: "/v1/x", match: "exact", price: fixed("1") }]));
  assert.ok(newly.some((c) => c.what === "POST /v1/x" && c.from === "free"));
  const m0 = terms([{ method: "POST", path: "/c", match: "exact", price: metered("2", "100") }]);
  const m1 = terms([{ method: "POST", path: "/c", match: "exact", price: { ...metered("2", "100"), meters: [{ name: "units", unit_price: "2", from: { header: "x-other" } }] } as Price }]);
  assert.equal(priceIncreases(m0, m1).length, 1);
  const t0 = terms([{ method: "POST", path: "/c", match: "exact", price: tokens }]);
  const moved = structuredClone(tokens) as Extract<Price, { kind: "metered" }>;
  moved.meters[0].from = { json: "/usage/prompt_tokens" };
  const dearer = structuredClone(tokens) as Extract<Price, { kind: "metered" }>;
  dearer.meters[1].unit_price = "4";
  assert.equal(priceIncreases(t0, terms([{ ...t0.routes[0], price: moved }])).length, 1, "a meter moved to another source");
  assert.equal(priceIncreases(t0, terms([{ ...t0.routes[0], price: dearer }])).length, 1, "a meter's unit price went up");
  assert.deepEqual(priceIncreases(terms([{ ...t0.routes[0], price: dearer }]), t0), [], "cheaper");
  const flags = priceIncreases(base, { ...base, charge_server_errors: true, refunds: { server_errors: false, over_max: false }, chain: { ...base.chain, pay_to: "0x04" } });
  assert.deepEqual(flags.map((c) => c.what), ["charge_server_errors", "refunds.server_errors", "refunds.over_max", "chain"]);
  assert.deepEqual(priceIncreases(base, { ...base, credit_limit: "1", max_lanes: 1 }), []);
});
