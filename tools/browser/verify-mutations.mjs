// Every byte matters: loads the page checker (crates/tally-bill/web/verify.js, bundled for
// Node with the pinned esbuild and @noble libraries) and one record's evidence from a bill,
// checks that the record verifies as it is, then flips each bit position's byte of its
// record bytes, its provider signature and its inclusion proof, and changes each character
// of the checkpoint note, one at a time, and checks that every such change fails.
// Prints one JSON line: { ok, mutations, survived: [...] }. Used by crates/tally-cli/tests/bill.rs.
//
//   node tools/browser/verify-mutations.mjs BILL.html RECORD_INDEX
import { createRequire } from 'node:module';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const require = createRequire(new URL('../package.json', import.meta.url));
const esbuild = require('esbuild');
const [billPath, indexArg] = process.argv.slice(2);
if (!billPath || indexArg === undefined) {
  console.error('usage: verify-mutations.mjs BILL.html RECORD_INDEX');
  process.exit(2);
}
const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tally-verify-'));
const out = join(dir, 'verify.mjs');
await esbuild.build({
  entryPoints: [join(root, 'crates/tally-bill/web/verify.js')],
  bundle: true, format: 'esm', platform: 'node', outfile: out, logLevel: 'warning',
  nodePaths: [join(root, 'tools/node_modules')],
});
const { checkEntry, verifyNote, unhex } = await import(pathToFileURL(out).href);
rmSync(dir, { recursive: true });

const html = readFileSync(billPath, 'utf8');
const block = (id) => {
  const open = `id="${id}">`;
  const at = html.indexOf(open) + open.length;
  return html.slice(at, html.indexOf('</script>', at));
};
const meta = JSON.parse(block('bill-meta'));
const ev = Buffer.from(block('bill-evidence'), 'base64');
const want = Number(indexArg);
let entry = null;
let at = 8 * meta.evidence_count;
for (let k = 0; k < meta.evidence_count; k++) {
  const index = ev.readDoubleLE(8 * k);
  const len = ev.readUInt32LE(at);
  const record = new Uint8Array(ev.subarray(at + 4, at + 4 + len));
  const signature = new Uint8Array(ev.subarray(at + 4 + len, at + 68 + len));
  const plen = ev[at + 68 + len];
  at += 69 + len;
  const proof = plen === 0xff ? null : [];
  for (let j = 0; plen !== 0xff && j < plen; j++) proof.push(new Uint8Array(ev.subarray(at + 32 * j, at + 32 * j + 32)));
  if (plen !== 0xff) at += 32 * plen;
  if (index === want) entry = { index, record, signature, proof };
}
if (!entry || !entry.proof) {
  console.error(`record ${want} has no evidence with a proof in this bill`);
  process.exit(2);
}
const clientKey = unhex(meta.client_key);
const providerKey = unhex(meta.provider_key);
const ctxOf = (note) => {
  const ctx = { channel: meta.channel_id, clientKey, providerKey, checkpoint: null, checkpointError: null };
  try { ctx.checkpoint = verifyNote(note, clientKey, providerKey); } catch (e) { ctx.checkpointError = e.message; }
  return ctx;
};
const ctx = ctxOf(meta.checkpoint);
const ok = checkEntry(entry, ctx).ok;
const survived = [];
let mutations = 0;
const flip = (bytes, k) => { const c = bytes.slice(); c[k] ^= 0x01; return c; };
for (let k = 0; k < entry.record.length; k++, mutations++) {
  if (checkEntry({ ...entry, record: flip(entry.record, k) }, ctx).ok) survived.push(`record byte ${k}`);
}
for (let k = 0; k < 64; k++, mutations++) {
  if (checkEntry({ ...entry, signature: flip(entry.signature, k) }, ctx).ok) survived.push(`signature byte ${k}`);
}
for (let j = 0; j < entry.proof.length; j++) {
  for (let k = 0; k < 32; k++, mutations++) {
    const proof = entry.proof.map((h, i) => (i === j ? flip(h, k) : h));
    if (checkEntry({ ...entry, proof }, ctx).ok) survived.push(`proof hash ${j} byte ${k}`);
  }
}
const note = meta.checkpoint;
for (let k = 0; k < note.length; k++, mutations++) {
  const changed = note.slice(0, k) + (note[k] === 'x' ? 'y' : 'x') + note.slice(k + 1);
  if (checkEntry(entry, ctxOf(changed)).ok) survived.push(`note character ${k}`);
}
console.log(JSON.stringify({ ok, mutations, recordBytes: entry.record.length, proofHashes: entry.proof.length, noteLength: note.length, survived }));
