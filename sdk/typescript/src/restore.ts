/**
 * Restoring the provider's log after it restarted in promise mode without committing every
 * promise (spec/HTTP.md §5.6), as crates/tally-client does: the client uploads the
 * co-signed records its mirror holds beyond the provider's durable head, in chunks, each
 * under a restore statement signed by the session key (spec/PROTOCOL.md §5.7); the last says
 * the client holds nothing further. Receipts held ahead of a gap, and receipts of requests
 * signed before the restore, cannot extend the log: they are dropped, and the final
 * statement disowns them.
 */
import { TallyError, equal, fromHex, toHex } from "./bytes.js";
import type { TallyClient } from "./client.js";
import { ed25519Sign } from "./crypto.js";
import { encodeRestore } from "./messages.js";
import type { LogState } from "./mirror.js";

/** Records per chunk: well inside the gateway's 128 KiB endpoint body (about 1 KB a record). */
const CHUNK = 100n;

/** Brings the provider's log back to the mirror from its durable state (caller holds the lock). */
export async function restoreLocked(c: TallyClient): Promise<void> {
  // Another of our requests may have restored the channel meanwhile.
  const now = await c.getJson(c.url(""));
  if (!now.restore_required) return;
  if (typeof now.restore_nonce !== "string") throw new TallyError("restore_required without a restore nonce");
  const nonce = fromHex(now.restore_nonce, 32);
  // Receipts of requests signed before this restore are disowned by it.
  c.restores++;
  const base: LogState = { size: BigInt(now.size), root: fromHex(now.root, 32), cumulative: BigInt(now.cumulative) };
  if (c.mirror.size < base.size) await c.resyncLocked(false);
  const ours = c.mirror.stateAt(base.size);
  if (!equal(ours.root, base.root) || ours.cumulative !== base.cumulative) throw c.stop(`fork at size ${base.size}`);
  c.ahead.clear();
  const end = c.mirror.size;
  for (let from = base; ;) {
    const to = end < from.size + CHUNK ? end : from.size + CHUNK;
    const after = c.mirror.stateAt(to);
    const statement = encodeRestore({
      channelId: c.channel, nonce, baseSize: from.size, baseRoot: from.root, size: to, root: after.root,
      cumulative: after.cumulative, complete: to === end,
    });
    const back = await c.postJson("/restore", {
      records: c.mirror.records.slice(Number(from.size), Number(to)),
      statement: toHex(statement),
      signature: toHex(ed25519Sign(c.sessionSeed, statement)),
    });
    if (BigInt(back.size) !== to) throw c.stop(`lost records: ours ${to}, theirs ${back.size}`);
    if (!equal(fromHex(back.root, 32), after.root) || BigInt(back.cumulative) !== after.cumulative) throw c.stop(`fork at size ${to}`);
    if (to === end) return;
    from = after;
  }
}
