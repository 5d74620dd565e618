/**
 * The client's mirror of its channel's log (spec/PROTOCOL.md §5.5): a contiguous prefix of
 * records each verified on its own (§5.3 R1–R4, R6), in its place (R5, R7, R8) and under
 * the provider's signature. The mirror's head is what authorizations acknowledge and what
 * checkpoints sign. Storage is pluggable: `MemoryStore` here, `FileStore` in `node.ts`.
 */
import { TallyError, equal, fromHex, toHex } from "./bytes.js";
import { Frontier } from "./merkle.js";
import {
  ACK_WINDOW, MAX_LANES, type LogRecord, checkRecordAlone, decodeRecord, encodeRecord, leafHash, verifyOutcome,
} from "./messages.js";

/** A record as a records page carries it (spec/HTTP.md §5.1). */
export interface WireRecord { record: string; provider_signature: string }

/** Where a mirror keeps its records (in index order) and a few metadata strings. */
export interface MirrorStore {
  load(): Promise<{ records: WireRecord[]; meta: Record<string, string> }>;
  append(records: WireRecord[]): Promise<void>;
  putMeta(key: string, value: string): Promise<void>;
}

export class MemoryStore implements MirrorStore {
  records: WireRecord[] = [];
  meta: Record<string, string> = {};
  async load() {
    return { records: [...this.records], meta: { ...this.meta } };
  }
  async append(records: WireRecord[]) {
    this.records.push(...records);
  }
  async putMeta(key: string, value: string) {
    this.meta[key] = value;
  }
}

export interface LogState { size: bigint; root: Uint8Array; cumulative: bigint }

const U128_MAX = (1n << 128n) - 1n;

export class Mirror {
  private frontier = new Frontier();
  /** `(root, cumulative)` at every size 0..=size, for R7 (acknowledged states). */
  private states: { root: Uint8Array; cumulative: bigint }[];
  private lanes = new Map<number, { nextSeq: bigint; ackSize: bigint }>();
  readonly records: WireRecord[] = [];
  /** Leaf hashes in index order, for inclusion proofs. */
  readonly leaves: Uint8Array[] = [];
  private meta: Record<string, string> = {};

  private constructor(
    private readonly store: MirrorStore,
    readonly channelId: Uint8Array,
    readonly clientKey: Uint8Array,
  ) {
    this.states = [{ root: this.frontier.root(), cumulative: 0n }];
  }

  /** Opens a mirror, re-verifying every stored record (a tampered file is refused). */
  static async open(store: MirrorStore, channelId: Uint8Array, clientKey: Uint8Array, providerKey: Uint8Array): Promise<Mirror> {
    const m = new Mirror(store, channelId, clientKey);
    const { records, meta } = await store.load();
    m.meta = meta;
    for (const w of records) m.place(m.checkExtends(w, providerKey), w);
    return m;
  }

  get size(): bigint { return this.frontier.size; }
  head(): LogState {
    const s = this.states[this.states.length - 1];
    return { size: this.size, root: s.root, cumulative: s.cumulative };
  }
  stateAt(size: bigint): LogState {
    const s = this.states[Number(size)];
    if (!s) throw new TallyError(`no state at size ${size}`);
    return { size, root: s.root, cumulative: s.cumulative };
  }
  /** The next seq of a lane: after its last mirrored record (§5.4). */
  nextSeq(lane: number): bigint { return this.lanes.get(lane)?.nextSeq ?? 0n; }
  getMeta(key: string): string | undefined { return this.meta[key]; }
  async putMeta(key: string, value: string): Promise<void> {
    this.meta[key] = value;
    await this.store.putMeta(key, value);
  }

  /**
   * Checks that a record extends the mirror exactly: valid alone under the client's key,
   * this channel, R5 (index, cumulative), R7 (acknowledged state), R8 (lane and seq), and the
   * provider's signature over its outcome. Returns the decoded record.
   */
  checkExtends(w: WireRecord, providerKey: Uint8Array): LogRecord {
    const index = this.size;
    const bad = (why: string) => new TallyError(`record ${index}: ${why}`);
    const bytes = fromHex(w.record);
    const r = decodeRecord(bytes);
    const a = r.authorization, o = r.outcome;
    if (!equal(a.channelId, this.channelId)) throw bad("another channel's record");
    checkRecordAlone(r, this.clientKey);
    if (o.index !== index) throw bad(`R5: index ${o.index}`);
    const cum = this.head().cumulative + o.amount;
    if (cum < 0n || cum > U128_MAX || o.cumulative !== cum) throw bad(`R5: cumulative ${o.cumulative}, expected ${cum}`);
    if (a.ackSize > index || index - a.ackSize > ACK_WINDOW) throw bad(`R7: ack_size ${a.ackSize}`);
    const acked = this.states[Number(a.ackSize)];
    if (!equal(acked.root, a.ackRoot) || acked.cumulative !== a.ackCumulative) throw bad("R7: acknowledged state");
    if (a.lane >= MAX_LANES) throw bad("R8: lane");
    const lane = this.lanes.get(a.lane) ?? { nextSeq: 0n, ackSize: 0n };
    if (a.seq !== lane.nextSeq) throw bad(`R8: seq ${a.seq} on lane ${a.lane}, expected ${lane.nextSeq}`);
    if (a.ackSize < lane.ackSize) throw bad("R8: acknowledgement went back");
    if (!verifyOutcome(providerKey, o, fromHex(w.provider_signature, 64))) throw bad("provider signature");
    return r;
  }

  private place(r: LogRecord, w: WireRecord): void {
    const leaf = leafHash(fromHex(w.record));
    this.leaves.push(leaf);
    this.frontier.push(leaf);
    this.states.push({ root: this.frontier.root(), cumulative: r.outcome.cumulative });
    this.lanes.set(r.authorization.lane, { nextSeq: r.authorization.seq + 1n, ackSize: r.authorization.ackSize });
    this.records.push(w);
  }

  /** Verifies and appends one record (the caller holds the mirror's order). */
  async append(w: WireRecord, providerKey: Uint8Array): Promise<LogRecord> {
    const r = this.checkExtends(w, providerKey);
    this.place(r, w);
    await this.store.append([w]);
    return r;
  }
}

export const wireRecord = (r: LogRecord, providerSignature: Uint8Array): WireRecord =>
  ({ record: toHex(encodeRecord(r)), provider_signature: toHex(providerSignature) });
