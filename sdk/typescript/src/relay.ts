/**
 * The provider's gasless-deposit relay (spec/HTTP.md §12): `POST /tally/v1/relay/open` and
 * `/relay/topup` take a signed {@link GaslessOpen} / {@link GaslessTopUp} and answer once the
 * transaction is mined. A refusal (`relay_refused` with `why`, `rate_limited`,
 * `unknown_channel`, `chain_unavailable`, `not_found` when the gateway has no relay…) is a
 * {@link RefusedError}.
 *
 * The answer is only a transaction hash: what counts is the channel the contract holds, which
 * the gateway checks at the first paid call (a payer who wants certainty reads the chain).
 */
import { TallyError, fromHex, toHex } from "./bytes.js";
import { answer } from "./errors.js";
import { type DepositDomains, type GaslessOpen, type GaslessTopUp, gaslessChannelId } from "./gasless.js";
import { API_PREFIX } from "./wire.js";

/** The relay's answer: the channel, the transaction hash (64 hex digits), its block and gas. */
export interface Relayed {
  channel_id: string;
  transaction: string;
  block: number;
  gas_used: number;
}

export interface RelayOptions {
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /**
   * How long to wait for the answer; default 150 s (the relay waits up to 90 s for the
   * receipt, then answers `chain_unavailable` naming the transaction).
   */
  timeoutMs?: number;
}

const RELAY_TIMEOUT_MS = 150_000;

/**
 * Submits a signed gasless open through the gateway at `baseUrl` (HTTP.md §12.1). With
 * `domains` (those it was signed in), the answer must name the channel the open creates.
 */
export async function openGasless(baseUrl: string, open: GaslessOpen, opts: RelayOptions & { domains?: DepositDomains } = {}): Promise<Relayed> {
  const got = await post(baseUrl, "/relay/open", open, opts);
  if (opts.domains !== undefined) {
    const want = toHex(gaslessChannelId(opts.domains, open));
    if (got.channel_id !== want) throw new TallyError(`the relay opened channel ${got.channel_id}, not ${want}`);
  }
  return got;
}

/**
 * Submits a signed gasless top-up through the gateway at `baseUrl` (HTTP.md §12.1); the
 * answer must name the channel that was signed for.
 */
export async function topUpGasless(baseUrl: string, topUp: GaslessTopUp, opts: RelayOptions = {}): Promise<Relayed> {
  const got = await post(baseUrl, "/relay/topup", topUp, opts);
  if (got.channel_id !== topUp.channel_id.replace(/^0x/, "").toLowerCase()) {
    throw new TallyError(`the relay topped up channel ${got.channel_id}, not ${topUp.channel_id}`);
  }
  return got;
}

async function post(baseUrl: string, tail: string, body: unknown, opts: RelayOptions): Promise<Relayed> {
  const http = opts.fetch ?? globalThis.fetch;
  const resp = await http(`${baseUrl.replace(/\/+$/, "")}${API_PREFIX}${tail}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(opts.timeoutMs ?? RELAY_TIMEOUT_MS),
  });
  let v: unknown;
  try {
    v = await answer(resp);
  } catch (e) {
    if (e instanceof SyntaxError) throw new TallyError(`the relay's answer is not JSON: ${e.message}`);
    throw e;
  }
  return relayed(v);
}

const HEX32 = /^(?:0x)?[0-9a-fA-F]{64}$/;

/** Checks the answer's shape: a relay answering something else is not believed. */
export function relayed(v: any): Relayed {
  const ok = v !== null && typeof v === "object" && typeof v.channel_id === "string" && HEX32.test(v.channel_id)
    && typeof v.transaction === "string" && HEX32.test(v.transaction)
    && Number.isSafeInteger(v.block) && v.block >= 0 && Number.isSafeInteger(v.gas_used) && v.gas_used >= 0;
  if (!ok) throw new TallyError(`the relay's answer is not {channel_id, transaction, block, gas_used}: ${JSON.stringify(v).slice(0, 200)}`);
  const norm = (h: string) => toHex(fromHex(h.replace(/^0x/, "").toLowerCase(), 32));
  return { channel_id: norm(v.channel_id), transaction: norm(v.transaction), block: v.block, gas_used: v.gas_used };
}
