/**
 * The client's lanes (spec/PROTOCOL.md §5.4): one request in flight per lane, so up to
 * `count` requests of one channel at once. A request leases a lane and gives it back with
 * the lane's next seq. A request whose answer was lost stays *unanswered* on its lane: the
 * same request sent again leases that lane and reuses that seq, so the provider answers it as
 * a retry and never charges it twice (spec/HTTP.md §9).
 */
export interface LaneSlot {
  lane: number;
  /** `null` until the lane's seq is known again (after an unanswered request). */
  nextSeq: bigint | null;
  unanswered: { seq: bigint; request: string } | null;
}

export class Lease {
  constructor(readonly slot: LaneSlot, private readonly pool: LanePool) {}

  unanswered(seq: bigint, request: string): void {
    this.slot.nextSeq = null;
    this.slot.unanswered = { seq, request };
  }

  answered(request: string, nextSeq: bigint): void {
    this.slot.nextSeq = nextSeq;
    const u = this.slot.unanswered;
    if (u && (u.request === request || nextSeq > u.seq)) this.slot.unanswered = null;
  }

  release(): void {
    this.pool.giveBack(this.slot);
  }
}

export class LanePool {
  private free: LaneSlot[];
  private waiters: (() => void)[] = [];
  private pinned = new Map<string, number>();

  constructor(count: number, nextSeq: (lane: number) => bigint | null) {
    // Lane 0 is leased first (taken from the end).
    this.free = [];
    for (let lane = Math.max(1, count) - 1; lane >= 0; lane--) this.free.push({ lane, nextSeq: nextSeq(lane), unanswered: null });
  }

  /** The free lane `lease(request)` would take now, if any. */
  peek(request: string): LaneSlot | undefined {
    const at = this.pick(request);
    return at >= 0 ? this.free[at] : undefined;
  }

  private pick(request: string): number {
    const pin = this.pinned.get(request);
    if (pin !== undefined) return this.free.findLastIndex((s) => s.lane === pin);
    const at = this.free.findLastIndex((s) => s.unanswered === null);
    return at >= 0 ? at : this.free.length - 1;
  }

  /** Waits for a lane: the one `request` is unanswered on, else one with nothing unanswered. */
  async lease(request: string): Promise<Lease> {
    for (;;) {
      const at = this.pick(request);
      if (at >= 0) return new Lease(this.free.splice(at, 1)[0], this);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  /** Sets the next seq of every free lane (after a resync). */
  setFree(nextSeq: (lane: number) => bigint): void {
    for (const s of this.free) s.nextSeq = nextSeq(s.lane);
  }

  giveBack(slot: LaneSlot): void {
    for (const [req, lane] of this.pinned) if (lane === slot.lane) this.pinned.delete(req);
    if (slot.unanswered) this.pinned.set(slot.unanswered.request, slot.lane);
    this.free.push(slot);
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}

/** A FIFO async lock: the mirror is changed by one task at a time. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
