#!/usr/bin/env node
// Validates x402 v2 header values with the official SDK (@x402/core, pinned in
// package-lock.json): the conformance check of spec/HTTP.md §3.
//
// Input: lines on stdin (or arguments) of the form `<HEADER-NAME> <base64 value>`, where the
// name is PAYMENT-REQUIRED, PAYMENT-SIGNATURE or PAYMENT-RESPONSE. Each value is decoded with
// the SDK's own header decoder and parsed with the SDK's own schema:
//   PAYMENT-REQUIRED  -> PaymentRequiredV2Schema   (@x402/core/schemas)
//   PAYMENT-SIGNATURE -> PaymentPayloadV2Schema    (@x402/core/schemas)
//   PAYMENT-RESPONSE  -> the SDK's settle-response schema, reached through
//                        HTTPFacilitatorClient.settle with `fetch` answered in-process (the
//                        SDK exports no SettleResponse schema; nothing leaves this process).
// The schemas strip members they do not know instead of refusing them, so a value also fails
// when parsing dropped any member: every member tally sends must be one x402 v2 defines.
//
// Prints one line per value and exits 1 if any value fails, 2 on bad input.

import { createInterface } from "node:readline";
import {
  decodePaymentRequiredHeader,
  decodePaymentResponseHeader,
  decodePaymentSignatureHeader,
  HTTPFacilitatorClient,
} from "@x402/core/http";
import { PaymentPayloadV2Schema, PaymentRequiredV2Schema } from "@x402/core/schemas";

/** Paths of members present in `sent` but absent from `kept` (what the schema stripped). */
function dropped(sent, kept, at = "") {
  if (sent === null || typeof sent !== "object" || Array.isArray(sent)) return [];
  if (kept === null || typeof kept !== "object") return [at || "(root)"];
  const out = [];
  for (const key of Object.keys(sent)) {
    const path = at ? `${at}.${key}` : key;
    if (!(key in kept) || kept[key] === undefined) out.push(path);
    else out.push(...dropped(sent[key], kept[key], path));
  }
  return out;
}

function zodFailure(result) {
  return result.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
}

/** The SDK's settle-response schema, applied by its facilitator client to a canned answer. */
async function parseSettleResponse(json) {
  const realFetch = globalThis.fetch;
  globalThis.fetch = async () =>
    new Response(JSON.stringify(json), {
      status: 200,
      headers: { "content-type": "application/json" },
    });
  try {
    const client = new HTTPFacilitatorClient({ url: "http://127.0.0.1:9" });
    return await client.settle({ x402Version: 2 }, {});
  } finally {
    globalThis.fetch = realFetch;
  }
}

async function check(name, value) {
  switch (name.toUpperCase()) {
    case "PAYMENT-REQUIRED": {
      const json = decodePaymentRequiredHeader(value);
      const r = PaymentRequiredV2Schema.safeParse(json);
      if (!r.success) return `PaymentRequired rejected: ${zodFailure(r)}`;
      const lost = dropped(json, r.data);
      return lost.length ? `PaymentRequired members not in x402 v2: ${lost.join(", ")}` : null;
    }
    case "PAYMENT-SIGNATURE": {
      const json = decodePaymentSignatureHeader(value);
      const r = PaymentPayloadV2Schema.safeParse(json);
      if (!r.success) return `PaymentPayload rejected: ${zodFailure(r)}`;
      const lost = dropped(json, r.data);
      return lost.length ? `PaymentPayload members not in x402 v2: ${lost.join(", ")}` : null;
    }
    case "PAYMENT-RESPONSE": {
      const json = decodePaymentResponseHeader(value);
      let parsed;
      try {
        parsed = await parseSettleResponse(json);
      } catch (e) {
        return `SettleResponse rejected: ${e.message}`;
      }
      const lost = dropped(json, parsed);
      return lost.length ? `SettleResponse members not in x402 v2: ${lost.join(", ")}` : null;
    }
    default:
      return `unknown header ${name}`;
  }
}

async function lines() {
  if (process.argv.length > 2) return process.argv.slice(2);
  const out = [];
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) out.push(line.trim());
  }
  return out;
}

let failed = 0;
let checked = 0;
for (const line of await lines()) {
  const [name, value, ...rest] = line.split(/\s+/);
  if (!value || rest.length) {
    console.error(`bad input line: ${line.slice(0, 80)}`);
    process.exit(2);
  }
  let why;
  try {
    why = await check(name, value);
  } catch (e) {
    why = `undecodable: ${e.message}`;
  }
  checked += 1;
  if (why) {
    failed += 1;
    console.log(`FAIL ${name} (${value.length} bytes): ${why}`);
  } else {
    console.log(`ok   ${name} (${value.length} bytes)`);
  }
}
if (checked === 0) {
  console.error("no header values given");
  process.exit(2);
}
console.log(`${checked - failed}/${checked} header values accepted by @x402/core`);
process.exit(failed ? 1 : 0);
