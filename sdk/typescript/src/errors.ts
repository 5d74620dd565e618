/** The client's errors: a provider's refusal, a misbehaving provider (the client stops), or a lost response. */
import { TallyError } from "./bytes.js";

/** The gateway refused the request (spec/HTTP.md §8); nothing was recorded or charged. */
export class RefusedError extends TallyError {
  constructor(readonly reason: string, message: string, readonly fields: Record<string, unknown>, readonly status: number) {
    super(`${reason}: ${message}`);
    this.name = "RefusedError";
  }
}

/**
 * The provider broke the protocol (bad receipt, lost records, a fork…). The client stops:
 * every later paid request fails with this error, so nothing more is signed for it.
 */
export class MisbehaviorError extends TallyError {
  constructor(readonly what: string) {
    super(`provider misbehaved: ${what}`);
    this.name = "MisbehaviorError";
  }
}

/** Served terms raise prices over the accepted ones (spec/HTTP.md §4.4); nothing was signed. */
export class TermsRaisedError extends TallyError {
  constructor(readonly changes: { what: string; from: string; to: string }[]) {
    super(`terms raised: ${changes.map((c) => `${c.what}: ${c.from} -> ${c.to}`).join("; ")}`);
    this.name = "TermsRaisedError";
  }
}

/** The request was recorded (and charged) but its response is gone (`already_recorded`). */
export class ResponseLostError extends TallyError {
  constructor(readonly lane: number, readonly seq: bigint) {
    super(`response of lane ${lane} seq ${seq} was recorded but is no longer held`);
    this.name = "ResponseLostError";
  }
}

/** A successful JSON answer, or the refusal it carries. */
export async function answer(resp: Response): Promise<any> {
  const text = await resp.text();
  if (!resp.ok) throw refusal(resp.status, text);
  return JSON.parse(text);
}

/** The error an answer without a receipt stands for: a `RefusedError` when it carries a reason (HTTP.md §8). */
export function refusal(status: number, text: string): TallyError {
  try {
    const e = JSON.parse(text).error;
    const { reason, message, ...fields } = e;
    if (typeof reason === "string") return new RefusedError(reason, String(message ?? ""), fields, status);
  } catch { /* not an error body */ }
  return new TallyError(`status ${status} without a receipt or a reason: ${text.slice(0, 200)}`);
}
