/**
 * The terms document (spec/HTTP.md §4): prices by first matching route, the charge a
 * response must carry, and the review of newly served terms against the accepted ones
 * (§4.4), as tally-http's `price_increases` does.
 */
import { TallyError, parseAmount } from "./bytes.js";
import { METERS, NO_UNITS, ONE_CALL, type Units, termsHash } from "./messages.js";

/**
 * Where a meter's units come from (crates/tally-http meter.rs `UnitSource`): a response
 * header or trailer holding a plain decimal, an RFC 6901 pointer into a JSON body, or into
 * the data of the last server-sent event that has a count there.
 */
export type UnitSource = { header: string } | { trailer: string } | { json: string } | { sse: string };

/** One meter of a metered route (spec/HTTP.md §4.1): its units are signed in this order. */
export interface Meter { name: string; unit_price: string; from: UnitSource }

/**
 * A route's price. A metered price is always held with `meters`: the version 1 shorthand
 * (`units_header` + `unit_price`, one header meter named `units`) is rewritten on parse.
 */
export type Price =
  | { kind: "free" }
  | { kind: "fixed"; amount: string }
  | { kind: "metered"; meters: Meter[]; max_amount: string; min_charge?: string };

/** The source's kind and its name or pointer. */
export function sourceOf(from: UnitSource): [kind: "header" | "trailer" | "json" | "sse", at: string] {
  const keys = Object.keys(from ?? {});
  const kind = keys[0] as "header" | "trailer" | "json" | "sse";
  const at = (from as Record<string, unknown>)?.[kind];
  if (keys.length !== 1 || !["header", "trailer", "json", "sse"].includes(kind) || typeof at !== "string") {
    throw new TallyError(`meter source ${JSON.stringify(from)}`);
  }
  if ((kind === "header" || kind === "trailer") && !/^[a-z0-9-]+$/.test(at)) throw new TallyError(`${JSON.stringify(at)} is not a lowercase header name`);
  if ((kind === "json" || kind === "sse") && at !== "" && !at.startsWith("/")) throw new TallyError(`${JSON.stringify(at)} is not a JSON pointer (RFC 6901)`);
  return [kind, at];
}

/**
 * A metered price as crates/tally-http meter.rs reads it: `meters` (1 ..= 4, unique
 * non-empty names, readable sources), or the shorthand, nothing else.
 */
function normalizeMetered(p: Record<string, any>): Price {
  const known = new Set(["kind", "meters", "units_header", "unit_price", "max_amount", "min_charge"]);
  const unknown = Object.keys(p).filter((k) => !known.has(k));
  if (unknown.length) throw new TallyError(`metered price: unknown fields ${unknown.join(", ")}`);
  let meters: Meter[];
  if (p.meters !== undefined && p.units_header === undefined && p.unit_price === undefined) meters = p.meters;
  else if (p.meters === undefined && p.units_header !== undefined && p.unit_price !== undefined) {
    meters = [{ name: "units", unit_price: p.unit_price, from: { header: p.units_header } }];
  } else throw new TallyError("a metered price has either `meters` or both `units_header` and `unit_price`");
  if (!Array.isArray(meters) || meters.length < 1 || meters.length > METERS) throw new TallyError(`a metered price has 1 to ${METERS} meters`);
  for (const [i, m] of meters.entries()) {
    const mk = Object.keys(m ?? {}).filter((k) => !["name", "unit_price", "from"].includes(k));
    if (mk.length) throw new TallyError(`meter: unknown fields ${mk.join(", ")}`);
    if (typeof m.name !== "string" || m.name === "" || meters.slice(0, i).some((o) => o.name === m.name)) {
      throw new TallyError(`meter names must be unique and non-empty: ${JSON.stringify(m.name)}`);
    }
    parseAmount(m.unit_price);
    sourceOf(m.from);
  }
  parseAmount(p.max_amount);
  if (p.min_charge !== undefined) parseAmount(p.min_charge);
  const out: Price = { kind: "metered", meters, max_amount: p.max_amount };
  if (p.min_charge !== undefined) out.min_charge = p.min_charge;
  return out;
}

export interface Route { method: string; path: string; match: "exact" | "prefix"; price: Price; mime_type?: string }

export interface Terms {
  format: string;
  provider_key: string;
  chain: { chain_id: number; contract: string; asset: string; pay_to: string };
  credit_limit: string;
  max_lanes: number;
  checkpoint: { every_records: number; every_seconds: number; every_amount: string };
  charge_server_errors: boolean;
  refunds: { server_errors: boolean; over_max: boolean };
  max_request_bytes: number;
  max_response_bytes: number;
  routes: Route[];
  unmatched?: "free" | "deny";
}

/** The terms as served: the exact bytes (what the hash covers), parsed, and the hash. */
export interface Discovered { bytes: Uint8Array; terms: Terms; hash: Uint8Array }

export function parseTerms(bytes: Uint8Array): Discovered {
  let terms: Terms;
  try {
    terms = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new TallyError(`terms document: ${(e as Error).message}`);
  }
  // Unknown fields are refused in every tally document (spec/HTTP.md §1).
  const known = new Set(["format", "provider_key", "chain", "credit_limit", "max_lanes", "checkpoint", "charge_server_errors",
    "refunds", "max_request_bytes", "max_response_bytes", "routes", "unmatched"]);
  const unknown = Object.keys(terms ?? {}).filter((k) => !known.has(k));
  if (unknown.length) throw new TallyError(`terms document: unknown fields ${unknown.join(", ")}`);
  if (terms.format !== "tally-terms/v2") throw new TallyError(`terms format ${terms.format}`);
  if (!(terms.max_lanes >= 1 && terms.max_lanes <= 1024)) throw new TallyError("terms max_lanes");
  if (!Array.isArray(terms.routes)) throw new TallyError("terms routes");
  for (const r of terms.routes) {
    if (r?.price?.kind === "metered") r.price = normalizeMetered(r.price);
    priceMax(r.price);
  }
  return { bytes, terms, hash: termsHash(bytes) };
}

function routeMatches(r: Route, method: string, path: string): boolean {
  if (r.method !== "*" && r.method !== method) return false;
  if (r.match === "exact") return path === r.path;
  if (!path.startsWith(r.path)) return false;
  const rest = path.slice(r.path.length);
  return rest === "" || rest.startsWith("/") || r.path.endsWith("/");
}

/** §4.1: first match; `HEAD` is also priced by the `GET` of the same path; else free. */
export function priceFor(t: Terms, method: string, path: string): Price {
  const r = t.routes.find((r) => routeMatches(r, method, path) || (method === "HEAD" && r.method === "GET" && routeMatches(r, "GET", path)));
  return r ? r.price : { kind: "free" };
}

/** The most one call can cost (`max_amount` to authorize), `null` when free. */
export function priceMax(p: Price): bigint | null {
  if (p.kind === "free") return null;
  if (p.kind === "fixed") return parseAmount(p.amount);
  if (p.kind === "metered") return parseAmount(p.max_amount);
  throw new TallyError(`unknown price kind ${(p as { kind: string }).kind}`);
}

/**
 * The `(units, amount)` a response must be charged (§4.1, tally-http `Price::charge_answer`):
 * a 5xx is free unless the terms charge server errors; a fixed price is one call; a metered
 * one is `min(max(Σ units_i × unit_price_i, min_charge), max_amount, authorization max)`
 * over the units the client saw (`reported`, one count per meter).
 */
export function expectedCharge(
  chargeServerErrors: boolean, price: Price, status: number, reported: Units, maxAmount: bigint,
): { units: Units; amount: bigint } {
  if (status >= 500 && !chargeServerErrors) return { units: NO_UNITS(), amount: 0n };
  const min = (a: bigint, b: bigint) => (a < b ? a : b);
  if (price.kind === "free") return { units: NO_UNITS(), amount: 0n };
  if (price.kind === "fixed") return { units: ONE_CALL(), amount: min(parseAmount(price.amount), maxAmount) };
  const units = [...reported];
  return { units, amount: meteredCharge(price, units, maxAmount) };
}

/** tally-http `MeteredPrice::charge` (the route's maximum bounds it, so no overflow matters). */
export function meteredCharge(price: Extract<Price, { kind: "metered" }>, units: Units, maxAmount: bigint): bigint {
  const sum = price.meters.reduce((acc, m, i) => acc + (units[i] ?? 0n) * parseAmount(m.unit_price), 0n);
  const floor = parseAmount(price.min_charge ?? "0");
  const charge = sum > floor ? sum : floor;
  const cap = parseAmount(price.max_amount);
  return [charge, cap, maxAmount].reduce((a, b) => (a < b ? a : b));
}

export interface TermsIncrease { what: string; from: string; to: string }

const describe = (p: Price): string =>
  p.kind === "free" ? "free" : p.kind === "fixed" ? `fixed ${p.amount}`
    : `metered [${p.meters.map((m) => `${m.name} ${m.unit_price} per unit from ${JSON.stringify(m.from)}`).join("; ")}], min ${p.min_charge ?? "0"}, max ${p.max_amount}`;

function priceRaised(old: Price, now: Price): boolean {
  if (now.kind === "free") return false;
  if (old.kind === "free") return true;
  if (old.kind === "metered" && now.kind === "metered") {
    // tally-http `MeteredPrice::raised_by`: a meter added, removed, renamed or moved to
    // another source is an increase (the client can no longer tell what a unit is).
    const same = old.meters.length === now.meters.length
      && old.meters.every((a, i) => a.name === now.meters[i].name && JSON.stringify(sourceOf(a.from)) === JSON.stringify(sourceOf(now.meters[i].from)));
    return !same || old.meters.some((a, i) => parseAmount(now.meters[i].unit_price) > parseAmount(a.unit_price))
      || parseAmount(now.max_amount) > parseAmount(old.max_amount)
      || parseAmount(now.min_charge ?? "0") > parseAmount(old.min_charge ?? "0");
  }
  return (priceMax(now) ?? 0n) > (priceMax(old) ?? 0n);
}

/**
 * §4.4: what the new document charges more than the old, probing every route path of
 * either (and a child of each prefix route) for every method either names and any other.
 */
export function priceIncreases(old: Terms, now: Terms): TermsIncrease[] {
  const all = [...old.routes, ...now.routes];
  const methods = [...all.map((r) => r.method).filter((m) => m !== "*"), "(any other method)"];
  const paths: string[] = [];
  for (const r of all) {
    paths.push(r.path);
    if (r.match === "prefix") paths.push(`${r.path}${r.path.endsWith("/") ? "" : "/"}…`);
  }
  const out: TermsIncrease[] = [];
  for (const path of paths) {
    for (const method of methods) {
      const from = priceFor(old, method, path), to = priceFor(now, method, path);
      if (!priceRaised(from, to)) continue;
      const c = { what: `${method} ${path}`, from: describe(from), to: describe(to) };
      if (!out.some((o) => o.what === c.what && o.from === c.from && o.to === c.to)) out.push(c);
    }
  }
  if (now.charge_server_errors && !old.charge_server_errors) out.push({ what: "charge_server_errors", from: "false", to: "true" });
  if (old.refunds.server_errors && !now.refunds.server_errors) out.push({ what: "refunds.server_errors", from: "true", to: "false" });
  if (old.refunds.over_max && !now.refunds.over_max) out.push({ what: "refunds.over_max", from: "true", to: "false" });
  const chain = (c: Terms["chain"]) => `chain_id ${c.chain_id}, contract ${c.contract}, asset ${c.asset}, pay_to ${c.pay_to}`;
  if (chain(old.chain) !== chain(now.chain)) out.push({ what: "chain", from: chain(old.chain), to: chain(now.chain) });
  return out;
}
