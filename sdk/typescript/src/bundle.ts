/**
 * Proof bundles (spec/PROTOCOL.md §7.3): one record proved to a third party who holds only
 * the two public keys, against a checkpoint both parties signed.
 */
import { TallyError, equal, fromHex, toHex } from "./bytes.js";
import { verifyNote } from "./checkpoint.js";
import { type TreeHasher, blake3Tree, rootOf, verifyInclusion } from "./merkle.js";
import { checkRecordAlone, decodeRecord, leafHash, verifyOutcome } from "./messages.js";

export interface ProofBundle {
  format: "tally-proof-bundle/v2";
  client_key: string;
  provider_key: string;
  record: string;
  provider_signature: string;
  index: number;
  inclusion_proof: string[];
  checkpoint: string;
  chain?: { chain_id: number; contract: string };
}

/** RFC 9162 §2.1.3.1 `PATH(m, D[n])` over leaf hashes, from the leaf's sibling up. */
export function inclusionPath(h: TreeHasher, leaves: Uint8Array[], m: number): Uint8Array[] {
  if (leaves.length <= 1) return [];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return m < k
    ? [...inclusionPath(h, leaves.slice(0, k), m), rootOf(h, leaves.slice(k))]
    : [...inclusionPath(h, leaves.slice(k), m - k), rootOf(h, leaves.slice(0, k))];
}

/** Verifies a bundle in §7.3's order; throws with the step that failed. */
export function verifyBundle(b: ProofBundle): void {
  const known = new Set(["format", "client_key", "provider_key", "record", "provider_signature", "index", "inclusion_proof", "checkpoint", "chain"]);
  const unknown = Object.keys(b).filter((k) => !known.has(k));
  if (unknown.length || b.format !== "tally-proof-bundle/v2") throw new TallyError(`not a v2 proof bundle (${unknown.join(", ") || b.format})`);
  const clientKey = fromHex(b.client_key, 32), providerKey = fromHex(b.provider_key, 32);
  const bytes = fromHex(b.record);
  const r = decodeRecord(bytes); // 1
  checkRecordAlone(r, clientKey); // 2
  if (!verifyOutcome(providerKey, r.outcome, fromHex(b.provider_signature, 64))) throw new TallyError("3: provider signature");
  const note = verifyNote(b.checkpoint, clientKey, providerKey, true); // 4
  if (!note.clientSigned) throw new TallyError("4: the checkpoint lacks the client's signature");
  if (!equal(note.checkpoint.channelId, r.authorization.channelId)) throw new TallyError("5: another channel's checkpoint");
  if (!Number.isSafeInteger(b.index) || r.outcome.index !== BigInt(b.index)) throw new TallyError("6: index");
  const proof = b.inclusion_proof.map((p) => fromHex(p, 32));
  if (!verifyInclusion(blake3Tree, BigInt(b.index), note.checkpoint.size, leafHash(bytes), proof, note.checkpoint.root)) {
    throw new TallyError("7: inclusion proof");
  }
}

/** A bundle of record `index` from its bytes, the leaf hashes of the log and a cosigned note. */
export function makeBundle(
  clientKey: Uint8Array, providerKey: Uint8Array, record: { record: string; provider_signature: string },
  index: number, leaves: Uint8Array[], note: string,
): ProofBundle {
  const size = Number(verifyNote(note, clientKey, providerKey, true).checkpoint.size);
  if (index >= size) throw new TallyError(`record ${index} is not covered by the latest checkpoint (size ${size})`);
  return {
    format: "tally-proof-bundle/v2", client_key: toHex(clientKey), provider_key: toHex(providerKey),
    record: record.record, provider_signature: record.provider_signature, index,
    inclusion_proof: inclusionPath(blake3Tree, leaves.slice(0, size), index).map(toHex), checkpoint: note,
  };
}
