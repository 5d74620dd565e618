/**
 * The x402 v2 header payloads (spec/HTTP.md §3): PaymentRequirements as the gateway
 * advertises them, the PaymentPayload the client sends in `PAYMENT-SIGNATURE` (with
 * `accepted` = the route's requirement, member for member as tally-http's `Requirement::tally`),
 * and the SettleResponse it reads from `PAYMENT-RESPONSE` (the receipt at `extra.receipt`;
 * `payer` and `amount` are informative, the signed outcome is what is verified).
 */
import { TallyError, fromHex, toBase64, toHex } from "./bytes.js";
import { type Authorization, type Outcome, decodeOutcome, encodeAuthorization } from "./messages.js";
import { type Discovered, type Price, priceMax } from "./terms.js";

export const X402_VERSION = 2;
export const SCHEME = "tally";
/** spec/HTTP.md §2 as the x402 v2 wire sets it (room for a stock client's `resource`). */
export const MAX_HEADER_BYTES = 4096;
export const WELL_KNOWN_PATH = "/.well-known/tally";
export const API_PREFIX = "/tally/v1";

export interface PaymentRequirements {
  scheme: string;
  network: string;
  amount: string;
  asset: string;
  payTo: string;
  maxTimeoutSeconds: number;
  extra: { contract: string; provider_key: string; terms_hash: string; terms_url: string } & Record<string, unknown>;
}

export interface PaymentPayload {
  x402Version: number;
  accepted: PaymentRequirements;
  payload: { authorization: string; signature: string };
  resource?: { url: string; description?: string; mimeType?: string };
  extensions?: Record<string, unknown>;
}

export const network = (chainId: number | bigint): string => `eip155:${chainId}`;

/**
 * The requirements the gateway advertises for a route (its 402 `accepts` entry,
 * spec/HTTP.md §3.1), rebuilt from the terms so the client pays on its first request.
 */
export function requirementsFor(d: Discovered, price: Price): PaymentRequirements {
  const t = d.terms;
  return {
    scheme: SCHEME,
    network: network(t.chain.chain_id),
    amount: String(priceMax(price) ?? 0n),
    asset: t.chain.asset,
    payTo: t.chain.pay_to,
    maxTimeoutSeconds: 60,
    extra: { contract: t.chain.contract, provider_key: t.provider_key, terms_hash: toHex(d.hash), terms_url: WELL_KNOWN_PATH },
  };
}

export function paymentPayload(accepted: PaymentRequirements, a: Authorization, sig: Uint8Array): PaymentPayload {
  return { x402Version: X402_VERSION, accepted, payload: { authorization: toHex(encodeAuthorization(a)), signature: toHex(sig) } };
}

/** `base64(JSON)`, refusing a header over the limit (spec/HTTP.md §2). */
export function encodeHeader(value: unknown): string {
  const text = toBase64(new TextEncoder().encode(JSON.stringify(value)));
  if (text.length > MAX_HEADER_BYTES) throw new TallyError(`header of ${text.length} bytes over ${MAX_HEADER_BYTES}`);
  return text;
}

export function decodeHeader(value: string): any {
  if (value.length > MAX_HEADER_BYTES) throw new TallyError("header over the limit");
  return JSON.parse(Buffer.from(value, "base64").toString("utf8"));
}

/** A receipt as `PAYMENT-RESPONSE` carries it: the outcome and the provider's signature. */
export interface WireReceipt { outcome: Outcome; outcomeHex: string; signature: Uint8Array }

/**
 * Reads `PAYMENT-RESPONSE`, an x402 v2 SettleResponse (spec/HTTP.md §3.3): `success` must be
 * true and the receipt sits at `extra.receipt` (outcome bytes and the provider's signature),
 * decoding canonically. `payer` and `amount` are informative (the signed outcome is
 * authoritative); they are returned for the caller.
 */
export function parsePaymentResponse(header: string): WireReceipt & { raw: any; payer?: string; amount?: string } {
  const raw = decodeHeader(header);
  if (raw?.success !== true) throw new TallyError("PAYMENT-RESPONSE is not a successful settlement");
  const r = raw.extra?.receipt;
  if (typeof r?.outcome !== "string" || typeof r?.signature !== "string") throw new TallyError("PAYMENT-RESPONSE without extra.receipt");
  const payer = typeof raw.payer === "string" ? raw.payer : undefined;
  const amount = typeof raw.amount === "string" ? raw.amount : undefined;
  return { raw, payer, amount, outcome: decodeOutcome(fromHex(r.outcome)), outcomeHex: r.outcome, signature: fromHex(r.signature, 64) };
}

/** Reads a 402's `PAYMENT-REQUIRED` and returns its tally requirements, if any. */
export function tallyRequirements(header: string): PaymentRequirements | undefined {
  const pr = decodeHeader(header);
  return (pr?.accepts ?? []).find((a: PaymentRequirements) => a?.scheme === SCHEME);
}
