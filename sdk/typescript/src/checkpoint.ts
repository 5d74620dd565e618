/**
 * Checkpoints (spec/PROTOCOL.md §6): the C2SP tlog-checkpoint body, the client's signed-note
 * signature (§6.2) and the provider's tlog-cosignature (§6.3).
 */
import { TallyError, concat, equal, fromBase64, toBase64, toHex, u64BE, utf8 } from "./bytes.js";
import { ed25519Sign, ed25519VerifyStrict, sha256Hash } from "./crypto.js";

export interface Checkpoint {
  channelId: Uint8Array;
  size: bigint;
  root: Uint8Array;
  cumulative: bigint;
}

export const CLIENT_KEY_NAME = "tally-client";
export const PROVIDER_KEY_NAME = "tally-provider";
const DASH = "\u2014 ";
const MAX_NOTE = 8192;

/** §6.1: four lines, decimals without sign or leading zeros, root in padded base64. */
export function checkpointBody(c: Checkpoint): string {
  return `tally/channel/${toHex(c.channelId)}\n${c.size}\n${toBase64(c.root)}\ncumulative ${c.cumulative}\n`;
}

/** Parses a body, refusing anything that does not re-render identically (§6.1). */
export function parseCheckpointBody(body: string): Checkpoint {
  const m = /^tally\/channel\/([0-9a-f]{64})\n(0|[1-9][0-9]*)\n([A-Za-z0-9+/=]+)\ncumulative (0|[1-9][0-9]*)\n$/.exec(body);
  if (!m) throw new TallyError("checkpoint body does not parse");
  const c = { channelId: Uint8Array.from(Buffer.from(m[1], "hex")), size: BigInt(m[2]), root: fromBase64(m[3]), cumulative: BigInt(m[4]) };
  if (c.root.length !== 32 || checkpointBody(c) !== body) throw new TallyError("checkpoint body is not canonical");
  return c;
}

/** `key_id = SHA-256(name || 0x0A || type || public_key)[0..4]` (§6.2, §6.3). */
export const keyId = (name: string, type: number, pub: Uint8Array): Uint8Array =>
  sha256Hash(concat(utf8(name), Uint8Array.of(0x0a, type), pub)).slice(0, 4);

/** The client's signature line (§6.2): type 0x01, the session key signs the body. */
export function clientSignatureLine(body: string, seed: Uint8Array, pub: Uint8Array): string {
  const sig = ed25519Sign(seed, utf8(body));
  return `${DASH}${CLIENT_KEY_NAME} ${toBase64(concat(keyId(CLIENT_KEY_NAME, 1, pub), sig))}\n`;
}

/** A note carrying only the client's signature: what the gateway is sent (HTTP.md §6). */
export const signCheckpointNote = (c: Checkpoint, seed: Uint8Array, pub: Uint8Array): string => {
  const body = checkpointBody(c);
  return `${body}\n${clientSignatureLine(body, seed, pub)}`;
};

export interface VerifiedNote {
  checkpoint: Checkpoint;
  body: string;
  clientSigned: boolean;
  cosignTime?: bigint;
}

/**
 * Verifies a note: lines naming a known key must verify (§6.3); others are ignored.
 * `requireCosignature` demands the provider's cosignature (a note the gateway returned).
 */
export function verifyNote(note: string, clientKey: Uint8Array, providerKey: Uint8Array, requireCosignature: boolean): VerifiedNote {
  if (utf8(note).length > MAX_NOTE) throw new TallyError("note over 8192 bytes");
  const split = note.indexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new TallyError("note without signatures");
  const body = note.slice(0, split + 1);
  const checkpoint = parseCheckpointBody(body);
  const out: VerifiedNote = { checkpoint, body, clientSigned: false };
  const clientId = keyId(CLIENT_KEY_NAME, 1, clientKey);
  const providerId = keyId(PROVIDER_KEY_NAME, 4, providerKey);
  for (const line of note.slice(split + 2, -1).split("\n")) {
    if (!line.startsWith(DASH)) throw new TallyError("bad signature line");
    const [name, blob, extra] = line.slice(DASH.length).split(" ");
    if (extra !== undefined || blob === undefined) throw new TallyError("bad signature line");
    const raw = fromBase64(blob);
    if (name === CLIENT_KEY_NAME && raw.length === 68 && equal(raw.subarray(0, 4), clientId)) {
      if (!ed25519VerifyStrict(clientKey, utf8(body), raw.subarray(4))) throw new TallyError("client signature of the note");
      out.clientSigned = true;
    } else if (name === PROVIDER_KEY_NAME && raw.length === 76 && equal(raw.subarray(0, 4), providerId)) {
      const t = Buffer.from(raw.subarray(4, 12)).readBigUInt64BE();
      const msg = utf8(`cosignature/v1\ntime ${t}\n${body}`);
      if (!ed25519VerifyStrict(providerKey, msg, raw.subarray(12))) throw new TallyError("provider cosignature of the note");
      out.cosignTime = t;
    }
  }
  if (requireCosignature && out.cosignTime === undefined) throw new TallyError("note lacks the provider's cosignature");
  return out;
}

export { u64BE };
