/**
 * The terms document (spec/HTTP.md §4): prices by first matching route, the charge a
 * response must carry, and the review of newly served terms against the accepted ones
 * (§4.4), as tally-http's `price_increases` does.
 */
import { TallyError, parseAmount } from "./bytes.js";
import { termsHash } from "./messages.js";

export type Price =
  | { kind: "free" }
  | { kind: "fixed"; amount: string }
  | { kind: "metered"; units_header: string; unit_price: string; max_amount: string; min_charge?: string };

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
  for (const r of terms.routes) priceMax(r.price);
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

/** Units header value: plain decimal (surrounding whitespace allowed), else 0. */
function parseUnits(text: string | null): bigint {
  const t = (text ?? "").trim();
  if (!/^[0-9]+$/.test(t)) return 0n;
  const v = BigInt(t);
  return v < 1n << 64n ? v : 0n;
}

/** The `(units, amount)` a response must be charged (§4.1), as the Rust client expects. */
export function expectedCharge(
  chargeServerErrors: boolean, price: Price, status: number, header: (name: string) => string | null, maxAmount: bigint,
): { units: bigint; amount: bigint } {
  if (status >= 500 && !chargeServerErrors) return { units: 0n, amount: 0n };
  const min = (a: bigint, b: bigint) => (a < b ? a : b);
  const max = (a: bigint, b: bigint) => (a > b ? a : b);
  if (price.kind === "free") return { units: 0n, amount: 0n };
  if (price.kind === "fixed") return { units: 1n, amount: min(parseAmount(price.amount), maxAmount) };
  const units = parseUnits(header(price.units_header));
  const charge = max(units * parseAmount(price.unit_price), parseAmount(price.min_charge ?? "0"));
  return { units, amount: min(min(charge, parseAmount(price.max_amount)), maxAmount) };
}

export interface TermsIncrease { what: string; from: string; to: string }

const describe = (p: Price): string =>
  p.kind === "free" ? "free" : p.kind === "fixed" ? `fixed ${p.amount}`
    : `metered ${p.unit_price} per ${p.units_header} unit, min ${p.min_charge ?? "0"}, max ${p.max_amount}`;

function priceRaised(old: Price, now: Price): boolean {
  if (now.kind === "free") return false;
  if (old.kind === "free") return true;
  if (old.kind === "metered" && now.kind === "metered") {
    return old.units_header !== now.units_header || parseAmount(now.unit_price) > parseAmount(old.unit_price)
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
