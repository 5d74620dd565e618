/**
 * The tally scheme for the official x402 client (`@x402/core/client`, `@x402/fetch`).
 *
 * x402's scheme interface hands `createPaymentPayload` only the PaymentRequirements, but a
 * tally authorization signs the request itself (its salted hash, spec/PROTOCOL.md §3.3), and
 * a tally receipt is checked against the response body (§5.2 `response_hash`), which x402's
 * response hooks never see. So the scheme comes with its transport, `scheme.fetch`, to pass
 * as the `fetch` that `wrapFetchWithPayment` wraps:
 *
 * ```ts
 * const scheme = new TallyScheme(await TallyClient.connect({...}));
 * const client = x402Client.fromConfig({
 *   schemes: [{ network: "eip155:*", client: scheme }],
 *   spendControls: { allowedAssets: [scheme.allowedAsset()] },
 * });
 * const pay = wrapFetchWithPayment(scheme.fetch, client);
 * const res = await pay("http://127.0.0.1:8402/v1/items/1");
 * ```
 *
 * The transport pays priced routes on the first request (no 402 round trip, P1) when the
 * terms price them. When the gateway answers 402 instead, the official client selects the
 * tally requirements and calls `createPaymentPayload`, which signs the request that got the
 * 402 (remembered by the transport); the official client builds the PaymentPayload with
 * `accepted` = the advertised requirements, and the transport sends it, verifies the receipt
 * with the body and mirrors the record. Receipts are on `response.receipt`.
 */
import type { PaymentPayloadContext, PaymentPayloadResult, PaymentRequirements, SchemeNetworkClient } from "@x402/core/types";
import type { PaymentCreationContext } from "@x402/core/client";

import { TallyError } from "./bytes.js";
import type { TallyClient } from "./client.js";
import { type PaidRequest, previewPayload, sendPaid, type TallyResponse } from "./paid.js";
import { priceFor } from "./terms.js";
import { SCHEME, decodeHeader } from "./wire.js";

type Pending = Omit<PaidRequest, "template">;

export interface TallySchemeOptions {
  /** Pay priced routes before any 402 (default true). `false` always takes x402's 402 round trip. */
  payFirst?: boolean;
}

export class TallyScheme implements SchemeNetworkClient {
  readonly scheme = SCHEME;
  /** Requests that got a 402, by the resource URL the 402 names (path and query). */
  private readonly waiting = new Map<string, Pending>();
  /** The resource of each requirements object the official client is about to pay. */
  private readonly selected = new WeakMap<object, string>();
  readonly schemeHooks = {
    onBeforePaymentCreation: async (ctx: PaymentCreationContext) => {
      this.selected.set(ctx.selectedRequirements, ctx.paymentRequired.resource?.url ?? "");
    },
  };

  constructor(readonly client: TallyClient, private readonly opts: TallySchemeOptions = {}) {}

  /**
   * The official client's spend controls allow only known stablecoins by default; this is
   * the allowed-asset entry for the channel's token (`spendControls: { allowedAssets: [...] }`),
   * capped per payment at `maxAmountPerPayment` base units when given.
   */
  allowedAsset(maxAmountPerPayment?: bigint): { network: `${string}:${string}`; asset: string; maxAmountPerPayment?: string } {
    const t = this.client.terms.terms;
    const entry = { network: `eip155:${t.chain.chain_id}` as const, asset: t.chain.asset };
    return maxAmountPerPayment === undefined ? entry : { ...entry, maxAmountPerPayment: String(maxAmountPerPayment) };
  }

  /** x402's scheme interface: signs the request that received the 402 under `requirements`. */
  async createPaymentPayload(x402Version: number, requirements: PaymentRequirements, _context?: PaymentPayloadContext): Promise<PaymentPayloadResult> {
    if (x402Version !== 2) throw new TallyError(`tally speaks x402 v2, not v${x402Version}`);
    const resource = this.selected.get(requirements);
    const req = resource === undefined ? undefined : this.waiting.get(resourceKey(resource));
    if (!req) throw new TallyError("tally: no request for these requirements; pass scheme.fetch to wrapFetchWithPayment");
    return { x402Version: 2, payload: previewPayload(this.client, req) };
  }

  /** The transport for `wrapFetchWithPayment` (see the module comment). */
  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<TallyResponse> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const headers: Record<string, string> = {};
    request.headers.forEach((v, k) => { headers[k] = v; });
    const body = new Uint8Array(await request.arrayBuffer());
    const pending: Pending = { method: request.method, path: url.pathname, query: url.search.slice(1), headers, body };
    const signature = headers["payment-signature"];
    delete headers["payment-signature"];
    delete headers["access-control-expose-headers"];
    if (signature !== undefined) {
      const template = decodeHeader(signature);
      if (template?.accepted?.scheme !== SCHEME) throw new TallyError("tally transport asked to send another scheme's payment");
      this.waiting.delete(resourceKey(url.pathname + url.search));
      return sendPaid(this.client, { ...pending, template: { accepted: template.accepted, resource: template.resource, extensions: template.extensions } });
    }
    const priced = priceFor(this.client.terms.terms, pending.method, pending.path).kind !== "free";
    if (priced && this.opts.payFirst !== false) return sendPaid(this.client, pending);
    const resp = await this.client.http(request.url, { method: request.method, headers, body: body.length ? (body as BodyInit) : undefined });
    if (resp.status === 402) {
      // Bounded: a 402 nobody pays must not hold its request forever.
      if (this.waiting.size >= 256) this.waiting.delete(this.waiting.keys().next().value!);
      this.waiting.set(resourceKey(url.pathname + url.search), pending);
    }
    return Object.assign(resp, { receipt: undefined });
  };
}

/** A resource URL as the gateway names it (`/path?query`), whatever origin it carries. */
function resourceKey(resource: string): string {
  const u = new URL(resource, "http://x");
  return u.pathname + u.search;
}

