/**
 * memberlist's TransmitLimitedQueue: messages waiting to be piggybacked on gossip, sent fewest
 * transmissions first (newest first among equals), each up to a retransmit limit, and replaced when
 * a newer message about the same subject is queued. Bounded in size.
 */

interface Item {
  readonly id: string;
  readonly msg: Uint8Array;
  /** Queue order: higher is newer. */
  readonly seq: number;
  transmits: number;
  live: boolean;
  readonly onDone: (() => void) | undefined;
}

/** Queue of encoded gossip messages keyed by subject (`id`). Not thread-shared; one per member. */
export class BroadcastQueue {
  private buckets: Item[][] = [];
  private readonly byId = new Map<string, Item>();
  private readonly maxItems: number;
  private seq = 0;
  /** Broadcasts dropped because the queue was full. */
  dropped = 0;

  constructor(maxItems: number) {
    this.maxItems = maxItems;
  }

  /** Number of queued messages. */
  get size(): number {
    return this.byId.size;
  }

  /** Queues `msg` about subject `id`, replacing any older message about it. `onDone` runs when it is sent out or replaced. */
  queue(id: string, msg: Uint8Array, onDone?: () => void): void {
    const old = this.byId.get(id);
    if (old) this.finish(old);
    if (this.byId.size >= this.maxItems) this.evictOne();
    const item: Item = { id, msg, seq: this.seq++, transmits: 0, live: true, onDone };
    this.byId.set(id, item);
    (this.buckets[0] ??= []).push(item);
  }

  private finish(item: Item): void {
    if (!item.live) return;
    item.live = false;
    this.byId.delete(item.id);
    item.onDone?.();
  }

  private evictOne(): void {
    for (let t = this.buckets.length - 1; t >= 0; t--) {
      const b = this.buckets[t];
      if (!b) continue;
      while (b.length > 0) {
        const it = b.shift()!;
        if (it.live) {
          this.finish(it);
          this.dropped++;
          return;
        }
      }
    }
  }

  /**
   * Takes messages fitting in `budget` bytes for one packet, counting a transmission for each and
   * retiring those that reached `limit`.
   */
  take(budget: number, limit: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.byId.size === 0) return out;
    const moved: Item[] = [];
    let examined = 0;
    for (let t = 0; t < this.buckets.length && budget > 8 && examined < 512; t++) {
      const b = this.buckets[t];
      if (!b || b.length === 0) continue;
      const keep: Item[] = [];
      for (let i = b.length - 1; i >= 0; i--) {
        const it = b[i]!;
        if (!it.live) continue;
        examined++;
        if (it.transmits >= limit) {
          this.finish(it);
          continue;
        }
        if (it.msg.length <= budget && examined <= 512) {
          out.push(it.msg);
          budget -= it.msg.length;
          it.transmits++;
          moved.push(it);
        } else {
          keep.push(it);
        }
      }
      keep.reverse();
      this.buckets[t] = keep;
    }
    // Re-file keeping each bucket ordered by queue order, newest last (taken first).
    for (const it of moved) {
      if (it.transmits >= limit) {
        this.finish(it);
        continue;
      }
      const b = (this.buckets[it.transmits] ??= []);
      let i = b.length;
      while (i > 0 && b[i - 1]!.seq > it.seq) i--;
      b.splice(i, 0, it);
    }
    return out;
  }
}
