/**
 * End to end: a real tally gateway (`tally serve`, the workspace's binary) in front of a Node
 * upstream, funding read from a real anvil (tools/install.sh) with the Tally contract
 * (`tally contract deploy`) and a TestToken (its committed artifact) deployed and a channel
 * opened (`tally channel open`). The TypeScript client pays it, concurrently over lanes and
 * through the official x402 client, signs the checkpoints the gateway asks for, builds a proof
 * bundle that `tally verify-proof` accepts, pays metered routes (an event stream read as it
 * arrives, a stream the upstream breaks, a stream whose end is lost and whose receipt comes
 * from the receipts endpoint, a JSON body), disputes a charged 5xx for a credit, then the
 * gateway is stopped, its log exported (`tally export`) and audited (`tally verify`): no
 * discrepancy, and the statement's records are the client's mirror byte for byte.
 * A second test funds a channel without ETH: a fresh wallet holding only the token signs an
 * EIP-3009 open and a permit top-up (src/gasless.ts), the gateway's `[relay]` submits them
 * (spec/HTTP.md §12), refusals come back as `RefusedError`s, and the wallet then pays.
 * Everything listens on 127.0.0.1.
 *
 * Needs: TALLY_BIN (default: $CARGO_TARGET_DIR/release/tally, else target/release/tally).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { createServer as netServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { x402Client } from "@x402/core/client";
import { wrapFetchWithPayment } from "@x402/fetch";

import {
  type DepositDomains, RefusedError, TallyClient, TallyScheme, fromHex, keccak, keyAddress, openGasless, randomSalt,
  signGaslessOpen, signGaslessTopUp, toHex, tokenSeparator, topUpGasless, utf8, type TallyResponse,
} from "../src/index.js";
import { FileStore } from "../src/node.js";
import { repoRoot } from "../test/repo.js";
import { TRICKY_JSON, TRICKY_SSE } from "./tricky.js";

const run = promisify(execFile);
const root = repoRoot();
const tallyBin = process.env.TALLY_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(root, "target"), "release", "tally");
const anvilBin = process.env.TALLY_ANVIL ?? join(root, "tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
// anvil's well-known dev accounts 0 (deployer), 1 (payer), 2 (payee).
const DEPLOYER_KEY = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYER_KEY = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const PAYEE = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

async function freePort(): Promise<number> {
  const s = netServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function rpc(url: string, method: string, params: unknown[]): Promise<any> {
  const r = await (await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) })).json();
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}

/** Sends from an unlocked anvil account and waits for success; returns the receipt. */
async function send(url: string, tx: Record<string, string>): Promise<any> {
  const hash = await rpc(url, "eth_sendTransaction", [tx]);
  let receipt: any = null;
  await waitFor("a receipt", async () => (receipt = await rpc(url, "eth_getTransactionReceipt", [hash])) !== null);
  assert.equal(receipt.status, "0x1", `transaction ${hash} reverted`);
  return receipt;
}

const word = (hex: string) => hex.padStart(64, "0");

/** Deploys the committed TestToken artifact (constructor `(string name, uint8 mode)`), mints to the payer. */
async function deployToken(url: string): Promise<string> {
  const artifact = JSON.parse(await readFile(join(root, "crates/tally-chain/artifacts/TestToken.json"), "utf8"));
  const name = toHex(utf8("Tally Test USD"));
  const args = word("40") + word("0") + word(((name.length / 2).toString(16))) + name.padEnd(Math.ceil(name.length / 64) * 64, "0");
  const bytecode = String(artifact.bytecode?.object ?? artifact.bytecode).replace(/^0x/, "");
  const receipt = await send(url, { from: PAYER, data: `0x${bytecode}${args}`, gas: "0x1000000" });
  const token = receipt.contractAddress as string;
  const mint = toHex(keccak(utf8("mint(address,uint256)")).slice(0, 4));
  await send(url, { from: PAYER, to: token, data: `0x${mint}${word(PAYER.slice(2).toLowerCase())}${word((10n ** 30n).toString(16))}` });
  return token;
}

async function writeKey(path: string, hex: string): Promise<void> {
  await writeFile(path, hex + "\n", { mode: 0o600 });
  await chmod(path, 0o600);
}

/** The events the upstream's `/v1/chat` streams (OpenAI-compatible usage in the last data event). */
const CHAT = [
  'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
  'data: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: {"usage":{"prompt_tokens":7,',
  '"completion_tokens":12}}\n\ndata: [DONE]\n\n',
];

function upstream(): Promise<Server> {
  const s = createServer((req, res) => {
    req.resume();
    req.on("end", async () => {
      const tricky = /^\/v1\/(chat|json)\/tricky\/(\d+)$/.exec(req.url ?? "");
      if (tricky) {
        const t = (tricky[1] === "chat" ? TRICKY_SSE : TRICKY_JSON)[Number(tricky[2])];
        res.writeHead(200, { "content-type": tricky[1] === "chat" ? "text/event-stream" : "application/json" });
        // In uneven pieces, so lines and events straddle reads.
        const bytes = Buffer.from(t.body);
        for (let at = 0; at < bytes.length; at += 4093) res.write(bytes.subarray(at, at + 4093));
        return void res.end();
      }
      if (req.url?.startsWith("/v1/chat")) {
        // An event stream, in pieces; `/v1/chat/break` breaks after a usage event.
        res.writeHead(200, { "content-type": "text/event-stream" });
        const broken = req.url.startsWith("/v1/chat/break");
        const pieces = broken ? ['data: {"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n', "data: {\"choices\""] : CHAT;
        for (const p of pieces) {
          await new Promise<void>((r) => res.write(p, () => r()));
          await new Promise((r) => setTimeout(r, 20));
        }
        return void (broken ? res.destroy() : res.end());
      }
      if (req.url?.startsWith("/v1/json")) {
        return void res.writeHead(200, { "content-type": "application/json" }).end('{"usage":{"total_tokens":21}}');
      }
      const status = req.url?.includes("/fail") ? 500 : 200;
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ path: req.url }));
    });
  });
  return new Promise((r) => s.listen(0, "127.0.0.1", () => r(s)));
}

function stopChild(c: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (c.exitCode !== null) return r();
    c.once("exit", () => r());
    c.kill("SIGINT");
  });
}

interface Env { cfg: string; cdir: string; channelId: string; gwPort: number; rpcUrl: string; token: string }

/**
 * anvil with a TestToken and the Tally contract, a provider and a client profile, the gateway
 * config (with a gasless-deposit relay whose wallet anvil funds) and a channel opened onchain. Children started are pushed to `children`.
 */
async function environment(dir: string, up: Server, children: ChildProcess[]): Promise<Env> {
  const anvilPort = await freePort();
  const anvil = spawn(anvilBin, ["--host", "127.0.0.1", "--port", String(anvilPort)], { stdio: "ignore" });
  children.push(anvil);
  const rpcUrl = `http://127.0.0.1:${anvilPort}`;
  await waitFor("anvil", async () => (await rpc(rpcUrl, "eth_chainId", [])) === "0x7a69");
  const token = await deployToken(rpcUrl);

  const gdir = join(dir, "gateway"), cdir = join(dir, "client");
  await mkdir(gdir);
  await run(tallyBin, ["keygen", "--dir", gdir, "--provider"]);
  await run(tallyBin, ["keygen", "--dir", cdir]);
  await writeKey(join(dir, "deployer.key"), DEPLOYER_KEY);
  await writeKey(join(dir, "payer.key"), PAYER_KEY);
  const relayKey = randomSalt();
  await writeKey(join(gdir, "relay.key"), toHex(relayKey));
  await rpc(rpcUrl, "anvil_setBalance", [keyAddress(relayKey), "0x56bc75e2d63100000"]);
  const gwPort = await freePort();
  const cfg = join(gdir, "gateway.toml");
  await writeFile(cfg, [
    `listen = "127.0.0.1:${gwPort}"`, `upstream = "http://127.0.0.1:${(up.address() as AddressInfo).port}"`,
    `data_dir = "data"`, `provider_key_file = "provider.key"`, `rpc_url = "${rpcUrl}"`, `credit_limit = "1000000"`,
    `max_lanes = 8`, "charge_server_errors = true", "", "[chain]", `chain_id = 1`, `contract = "0x${"00".repeat(20)}"`, `asset = "${token}"`, `pay_to = "${PAYEE}"`, "",
    "[checkpoint]", "every_records = 5", "every_seconds = 0", `every_amount = "0"`, "",
    "[refunds]", "server_errors = true", "over_max = true", "",
    "[[routes]]", `method = "GET"`, `path = "/v1/items"`, `match = "prefix"`, `price = { kind = "fixed", amount = "10" }`, "",
    "[[routes]]", `method = "POST"`, `path = "/v1/complete"`, `match = "exact"`, `price = { kind = "fixed", amount = "25" }`, "",
    "[[routes]]", `method = "POST"`, `path = "/v1/chat"`, `match = "prefix"`,
    `price = { kind = "metered", max_amount = "1000", min_charge = "2", meters = [`
      + `{ name = "input", unit_price = "1", from = { sse = "/usage/prompt_tokens" } }, `
      + `{ name = "output", unit_price = "3", from = { sse = "/usage/completion_tokens" } }] }`, "",
    "[[routes]]", `method = "POST"`, `path = "/v1/json"`, `match = "prefix"`,
    `price = { kind = "metered", max_amount = "500", meters = [{ name = "tokens", unit_price = "2", from = { json = "/usage/total_tokens" } }] }`, "",
    "[relay]", `key_file = "relay.key"`, `min_deposit = "1000"`, "",
  ].join("\n"));
  const deployed = JSON.parse((await run(tallyBin, ["--json", "contract", "deploy", "--rpc", rpcUrl, "--key", join(dir, "deployer.key"), "--config", cfg])).stdout);
  const contract = String(deployed.contract);
  const opened = await run(tallyBin, ["--json", "channel", "open", "--client", cdir, "--payer-key", join(dir, "payer.key"), "--rpc", rpcUrl,
    "--contract", contract, "--token", token, "--payee", PAYEE, "--amount", "100000"]);
  const channelId = String(JSON.parse(opened.stdout).channel_id).replace(/^0x/, "");
  return { cfg, cdir, channelId, gwPort, rpcUrl, token };
}

/**
 * Runs `body` against a fresh {@link environment} and its gateway (`tally serve`, started and
 * answering), in a temporary directory; stops every child and the upstream afterwards.
 */
async function withGateway(name: string, body: (env: Env, dir: string, base: string, gateway: ChildProcess) => Promise<void>): Promise<void> {
  assert.ok(existsSync(tallyBin), `no tally binary at ${tallyBin}: build it (cargo build --release -p tally-cli) or set TALLY_BIN`);
  assert.ok(existsSync(anvilBin), `no anvil at ${anvilBin}: run bash tools/install.sh`);
  const dir = await mkdtemp(join(tmpdir(), `tally-ts-${name}-`));
  const children: ChildProcess[] = [];
  const up = await upstream();
  try {
    const env = await environment(dir, up, children);
    const gateway = spawn(tallyBin, ["serve", "--config", env.cfg], { stdio: ["ignore", "inherit", "inherit"] });
    children.push(gateway);
    const base = `http://127.0.0.1:${env.gwPort}`;
    await waitFor("the gateway", async () => (await fetch(`${base}/healthz`)).ok);
    await body(env, dir, base, gateway);
  } finally {
    for (const c of children.reverse()) await stopChild(c);
    await new Promise((r) => up.close(r));
  }
}

test("pays a real tally gateway from Node; tally verify audits the log with no discrepancy", { timeout: 300_000 }, () =>
  withGateway("e2e", async ({ cfg, cdir, channelId }, dir, base, gateway) => {
    const sessionKey = fromHex((await readFile(join(cdir, "session.key"), "utf8")).trim().replace(/^0x/, ""), 32);
    const checkpointKey = fromHex((await readFile(join(cdir, "checkpoint.key"), "utf8")).trim().replace(/^0x/, ""), 32);
    const store = new FileStore(join(dir, "ts-mirror"));
    // The transport can lose the end of the next event stream: its body errors after the
    // upstream's bytes, before the gateway's final event.
    let loseEnd = false;
    const http: typeof fetch = async (input, init) => {
      const r = await fetch(input, init);
      if (!loseEnd || !(r.headers.get("content-type") ?? "").startsWith("text/event-stream") || !r.body) return r;
      loseEnd = false;
      let left = CHAT.join("").length;
      const reader = r.body.getReader();
      const cut = new ReadableStream<Uint8Array>({
        async pull(ctl) {
          const { done, value } = await reader.read();
          if (done || left <= 0) return ctl.error(new Error("connection lost"));
          const take = value.subarray(0, left);
          left -= take.length;
          ctl.enqueue(take);
        },
      });
      return new Response(cut, { status: r.status, headers: r.headers });
    };
    const client = await TallyClient.connect({ baseUrl: base, channelId, sessionKey, checkpointKey, store, lanes: 4, fetch: http });

    const first = await client.fetch(`${base}/v1/items/0`);
    assert.equal(first.status, 200);
    assert.equal(first.receipt?.outcome.amount, 10n);
    assert.deepEqual(first.receipt?.outcome.units, [1n, 0n, 0n, 0n], "a fixed price is one call");
    assert.equal(first.receipt?.payer, PAYER, "PAYMENT-RESPONSE names the channel's payer (EIP-55)");
    const many = await Promise.all(Array.from({ length: 12 }, (_, i) => client.fetch(`/v1/items/${i + 1}?page=${i}`)));
    assert.ok(many.every((r) => r.status === 200 && r.receipt));
    const posted = await client.fetch("/v1/complete", { method: "POST", body: JSON.stringify({ prompt: "hi" }), headers: { "content-type": "application/json" } });
    assert.equal(posted.receipt?.outcome.amount, 25n);

    // A 5xx the terms charge: disputed below under refunds.server_errors.
    const failed = await client.fetch("/v1/items/fail");
    assert.equal(failed.status, 500);
    assert.equal(failed.receipt?.outcome.amount, 10n);

    const scheme = new TallyScheme(client, { payFirst: false });
    const x402 = x402Client.fromConfig({ schemes: [{ network: "eip155:*", client: scheme }], spendControls: { allowedAssets: [scheme.allowedAsset()] } });
    const viaX402 = (await wrapFetchWithPayment(scheme.fetch, x402)(`${base}/v1/items/x402`)) as TallyResponse;
    assert.equal(viaX402.status, 200);
    assert.ok(viaX402.receipt);

    // A streamed answer (HTTP.md, streamed paid responses): chunks as they come, the final
    // payment-response event taken off, the receipt over exactly those bytes and their usage.
    const stream = await client.stream("/v1/chat/completions", { method: "POST", body: "{}" });
    assert.equal(stream.headers.get("content-type"), "text/event-stream");
    assert.equal(stream.headers.get("payment-response"), null);
    const parts: Uint8Array[] = [];
    for await (const c of stream) parts.push(c);
    assert.ok(parts.length >= 2, `the body came in ${parts.length} pieces`);
    const streamed = await stream.finish();
    assert.equal(Buffer.concat(parts).toString(), CHAT.join(""));
    assert.deepEqual(streamed.receipt?.outcome.units, [7n, 12n, 0n, 0n]);
    assert.equal(streamed.receipt?.outcome.amount, 7n + 36n);
    // The upstream breaks its stream: recorded as a 502 over the bytes forwarded, charged
    // here (charge_server_errors) by the usage it reported before breaking.
    const cut = await client.stream("/v1/chat/break", { method: "POST", body: "{}" });
    for await (const _ of cut) { /* drain */ }
    const broken = await cut.finish();
    assert.equal(broken.broken, true);
    assert.equal(broken.exchange?.status, 502);
    assert.deepEqual([broken.receipt?.outcome.units, broken.receipt?.outcome.amount], [[5n, 2n, 0n, 0n], 11n]);
    // The end is lost: the receipt comes from GET /tally/v1/channels/{id}/receipts (read-authenticated).
    loseEnd = true;
    const lost = await client.stream("/v1/chat/completions", { method: "POST", body: "{}" });
    const got: Uint8Array[] = [];
    await assert.rejects(async () => { for await (const c of lost) got.push(c); }, /connection lost/);
    const found = await lost.finish();
    assert.equal(Buffer.concat(got).toString(), CHAT.join(""));
    assert.deepEqual([found.receipt?.outcome.units, found.receipt?.outcome.amount], [[7n, 12n, 0n, 0n], 43n]);
    // Units from a JSON body at a pointer.
    const json = await client.fetch("/v1/json", { method: "POST", body: "{}" });
    assert.deepEqual([json.receipt?.outcome.units, json.receipt?.outcome.amount], [[21n, 0n, 0n, 0n], 42n]);

    // Usage that is easy to read wrongly: the gateway's reader and the client's must agree
    // (a disagreement stops the client), and both read what the case says.
    let trickyCharged = 0n;
    for (const [kind, cases] of [["chat", TRICKY_SSE], ["json", TRICKY_JSON]] as const) {
      for (const [i, t] of cases.entries()) {
        const s = await client.stream(`/v1/${kind}/tricky/${i}`, { method: "POST", body: "{}" });
        const seen: Uint8Array[] = [];
        for await (const c of s) seen.push(c);
        const { receipt } = await s.finish();
        assert.equal(Buffer.concat(seen).toString(), t.body, t.why);
        const units = kind === "chat" ? [t.units[0], t.units[1], 0n, 0n] : [t.units[0], 0n, 0n, 0n];
        assert.deepEqual(receipt?.outcome.units, units, t.why);
        trickyCharged += receipt!.outcome.amount;
      }
    }
    const tricky = BigInt(TRICKY_SSE.length + TRICKY_JSON.length);

    const note = await client.checkpoint();
    assert.match(note, /\u2014 tally-provider /);
    // A proof bundle the TypeScript client builds is one the Rust verifier accepts.
    const bundle = join(dir, "bundle.json");
    await writeFile(bundle, JSON.stringify(client.proofBundle(7)));
    await run(tallyBin, ["verify-proof", bundle]);
    // Two more calls, then the dispute (a credit may also go below the checkpoint, spec/HTTP.md §7).
    for (const i of [1, 2]) await client.fetch(`/v1/items/after-${i}`);
    const granted = await client.dispute(Number(failed.receipt!.outcome.index), failed.exchange!);
    assert.deepEqual([granted.amount, granted.rule], ["-10", "server_error"]);
    const head = client.head();
    assert.equal(head.size, 23n + tricky);
    assert.equal(head.cumulative, 17n * 10n + 25n + 43n + 11n + 43n + 42n + trickyCharged - 10n);

    await stopChild(gateway);
    const statement = join(dir, "statement.jsonl");
    await run(tallyBin, ["export", "--config", cfg, "--channel", channelId, "-o", statement]);
    const verified = await run(tallyBin, ["verify", "--statement", statement]);
    assert.match(verified.stdout, /VERIFIED: no discrepancies/, verified.stdout);
    assert.match(verified.stdout, new RegExp(`records\\s+${23n + tricky}\\b`), verified.stdout);
    assert.match(verified.stdout, /credited\s+10\b/, verified.stdout);
    // The checkpoints the gateway asked for (every 5 records, answered in TALLY-CHECKPOINT) and the posted one.
    const checkpoints = Number(/checkpoints\s+(\d+)/.exec(verified.stdout)?.[1]);
    assert.ok(checkpoints >= 2, verified.stdout);
    const lines = (await readFile(statement, "utf8")).split("\n").filter((l) => l.trim() !== "");
    const records = lines.slice(1).map((l) => JSON.parse(l));
    assert.deepEqual(records, (await store.load()).records, "the statement is the client's mirror, byte for byte");
  }));

const selector = (sig: string): string => toHex(keccak(utf8(sig)).slice(0, 4));
const call = (url: string, to: string, data: string): Promise<string> => rpc(url, "eth_call", [{ to, data: `0x${data}` }, "latest"]);
const uintOf = (hex: string): bigint => BigInt(hex === "0x" ? 0 : hex);
/** An ABI-encoded `string` return value. */
function abiString(hex: string): string {
  const b = fromHex(hex.replace(/^0x/, ""));
  const len = Number(uintOf(`0x${toHex(b.slice(32, 64))}`));
  return new TextDecoder().decode(b.slice(64, 64 + len));
}

test("a payer with tokens and no ETH opens and tops up through the gateway's relay, then pays", { timeout: 300_000 }, () =>
  withGateway("gasless", async ({ rpcUrl, token }, _dir, base) => {
    const { chain } = (await (await fetch(`${base}/.well-known/tally`)).json()) as { chain: { chain_id: number; contract: string; asset: string; pay_to: string } };

    // An agent wallet holding the token and no ETH, and its channel keys.
    const agentKey = randomSalt();
    const agent = keyAddress(agentKey);
    const mint = selector("mint(address,uint256)");
    await send(rpcUrl, { from: PAYER, to: token, data: `0x${mint}${word(agent.slice(2))}${word((1_000_000n).toString(16))}` });
    const ethOf = async () => uintOf(await rpc(rpcUrl, "eth_getBalance", [agent, "latest"]));
    const tokensOf = async () => uintOf(await call(rpcUrl, token, selector("balanceOf(address)") + word(agent.slice(2))));
    const checkpointKey = randomSalt();
    const sessionKey = randomSalt();

    // The token's domain, as the token itself reports it.
    const d: DepositDomains = {
      chainId: chain.chain_id, contract: chain.contract,
      token: { name: abiString(await call(rpcUrl, token, selector("name()"))), version: abiString(await call(rpcUrl, token, selector("version()"))), address: token },
    };
    assert.equal(`0x${toHex(tokenSeparator(d))}`, await call(rpcUrl, token, selector("DOMAIN_SEPARATOR()")));
    const block = await rpc(rpcUrl, "eth_getBlockByNumber", ["latest", false]);
    const until = Math.max(Number(block.timestamp), Math.floor(Date.now() / 1000)) + 600;

    const open = signGaslessOpen(agentKey, d, {
      payee: chain.pay_to, token: chain.asset, amount: 100_000n, signer: keyAddress(checkpointKey), withdrawDelay: 86_400, salt: randomSalt(),
    }, { kind: "eip3009", validAfter: 0, validBefore: until });
    const opened = await openGasless(base, open, { domains: d });
    assert.ok(opened.block > 0 && opened.gas_used > 21_000);
    assert.equal(await ethOf(), 0n, "the agent never held ETH");
    assert.equal(await tokensOf(), 900_000n);
    // The same open again: the relay refuses it (the channel exists), as a typed error.
    await assert.rejects(openGasless(base, open), (e) => e instanceof RefusedError && e.reason === "relay_refused");
    // Below the relay's minimum deposit: refused before any simulation.
    const small = signGaslessTopUp(agentKey, d, opened.channel_id, 999n, randomSalt(), { kind: "eip3009", validAfter: 0, validBefore: until });
    await assert.rejects(topUpGasless(base, small), (e) => e instanceof RefusedError && e.reason === "relay_refused");

    const client = await TallyClient.connect({ baseUrl: base, channelId: opened.channel_id, sessionKey, checkpointKey });
    const paid = await client.fetch(`${base}/v1/items/gasless`);
    assert.equal(paid.status, 200);
    assert.equal(paid.receipt?.outcome.amount, 10n);

    // A permit top-up, for the token's current permit nonce.
    const permitNonce = uintOf(await call(rpcUrl, token, selector("nonces(address)") + word(agent.slice(2))));
    const topUp = signGaslessTopUp(agentKey, d, opened.channel_id, 5_000n, randomSalt(), { kind: "permit", permitNonce, deadline: until });
    const topped = await topUpGasless(base, topUp);
    assert.equal(topped.channel_id, opened.channel_id);
    assert.equal(await tokensOf(), 895_000n);
    assert.equal(await ethOf(), 0n);
    const again = await client.fetch("/v1/items/after-top-up");
    assert.equal(again.receipt?.outcome.cumulative, 20n);
  }));
