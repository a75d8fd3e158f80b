// The faults still waiting for their page, found by page address in O(1)
// without allocating: an open-addressing hash table (linear probing,
// backward-shift deletion) from page address to the head of that page's list
// of wait records, and a pool of wait records (fault time, vCPU index, next)
// in typed arrays with a free list. Both grow by doubling when full, so the
// steady state allocates nothing.

const EMPTY = -1;

/** The slot of `addr` in a table of 2^(32 - shift) slots: Fibonacci hashing
 *  on both halves of the address; the top bits are used because page
 *  addresses have their low bits all zero. (Also the replay's page states.) */
export function addrSlot(addr: number, shift: number): number {
  const lo = addr >>> 0;
  const hi = (addr / 4294967296) >>> 0;
  return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> shift;
}

export class PageWaiters {
  // hash table: page address -> index of the first wait record
  private keys: Float64Array;
  private heads: Int32Array;
  private mask: number;
  private shift: number;
  private pageCount = 0;

  // wait-record pool; the walk after take() reads these arrays directly
  /** time (ns) the fault was seen, per record */
  faultTime: Float64Array;
  /** vCPU index of the faulting thread, -1 for a thread that is no vCPU */
  faultVcpu: Int32Array;
  /** next record waiting on the same page, or next free record; -1 ends */
  nextRecord: Int32Array;
  private freeHead = EMPTY;
  private recordCount = 0;

  constructor(initialRecords = 64) {
    const records = Math.max(4, initialRecords | 0);
    this.faultTime = new Float64Array(records);
    this.faultVcpu = new Int32Array(records);
    this.nextRecord = new Int32Array(records);
    this.chainFree(0, records);
    let cap = 8;
    while (cap < records * 2) cap *= 2;
    this.keys = new Float64Array(cap);
    this.heads = new Int32Array(cap).fill(EMPTY);
    this.mask = cap - 1;
    this.shift = 32 - Math.log2(cap);
  }

  /** wait records in use (faults outstanding) */
  get records(): number { return this.recordCount; }
  /** pages with at least one waiter */
  get pages(): number { return this.pageCount; }

  /** Adds a wait record for `addr`. */
  add(addr: number, time: number, vcpu: number): void {
    if ((this.pageCount + 1) * 2 > this.keys.length) this.growTable();
    if (this.freeHead === EMPTY) this.growPool();
    const rec = this.freeHead;
    this.freeHead = this.nextRecord[rec];
    this.faultTime[rec] = time;
    this.faultVcpu[rec] = vcpu;
    this.recordCount++;

    const keys = this.keys;
    const heads = this.heads;
    let i = this.slotOf(addr);
    while (heads[i] !== EMPTY) {
      if (keys[i] === addr) {
        this.nextRecord[rec] = heads[i];
        heads[i] = rec;
        return;
      }
      i = (i + 1) & this.mask;
    }
    keys[i] = addr;
    heads[i] = rec;
    this.nextRecord[rec] = EMPTY;
    this.pageCount++;
  }

  /** Whether a fault is waiting on `addr`. */
  has(addr: number): boolean {
    return this.find(addr) !== EMPTY;
  }

  /**
   * Removes `addr` from the table and returns the first of its wait records
   * (-1 when none waits). The caller walks the list with nextRecord[] and
   * gives each record back with release().
   */
  take(addr: number): number {
    const i = this.find(addr);
    if (i === EMPTY) return EMPTY;
    const head = this.heads[i];
    this.removeSlot(i);
    this.pageCount--;
    return head;
  }

  /** Returns a record (already unlinked by take()) to the free list. */
  release(rec: number): void {
    this.nextRecord[rec] = this.freeHead;
    this.freeHead = rec;
    this.recordCount--;
  }

  /** Drops every record and shrinks the arrays back to a minimum. */
  clear(): void {
    this.faultTime = new Float64Array(4);
    this.faultVcpu = new Int32Array(4);
    this.nextRecord = new Int32Array(4);
    this.freeHead = EMPTY;
    this.chainFree(0, 4);
    this.keys = new Float64Array(8);
    this.heads = new Int32Array(8).fill(EMPTY);
    this.mask = 7;
    this.shift = 29;
    this.pageCount = 0;
    this.recordCount = 0;
  }

  private slotOf(addr: number): number {
    return addrSlot(addr, this.shift);
  }

  private find(addr: number): number {
    const keys = this.keys;
    const heads = this.heads;
    let i = this.slotOf(addr);
    while (heads[i] !== EMPTY) {
      if (keys[i] === addr) return i;
      i = (i + 1) & this.mask;
    }
    return EMPTY;
  }

  // Backward-shift deletion: keeps every probe chain unbroken, no tombstones.
  private removeSlot(i: number): void {
    const keys = this.keys;
    const heads = this.heads;
    const mask = this.mask;
    let j = i;
    for (;;) {
      heads[i] = EMPTY;
      for (;;) {
        j = (j + 1) & mask;
        if (heads[j] === EMPTY) return;
        const k = this.slotOf(keys[j]);
        const stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) break;
      }
      keys[i] = keys[j];
      heads[i] = heads[j];
      i = j;
    }
  }

  private chainFree(from: number, to: number): void {
    for (let r = to - 1; r >= from; r--) {
      this.nextRecord[r] = this.freeHead;
      this.freeHead = r;
    }
  }

  private growPool(): void {
    const n = this.faultTime.length;
    const time = new Float64Array(n * 2);
    const vcpu = new Int32Array(n * 2);
    const next = new Int32Array(n * 2);
    time.set(this.faultTime);
    vcpu.set(this.faultVcpu);
    next.set(this.nextRecord);
    this.faultTime = time;
    this.faultVcpu = vcpu;
    this.nextRecord = next;
    this.chainFree(n, n * 2);
  }

  private growTable(): void {
    const oldKeys = this.keys;
    const oldHeads = this.heads;
    const cap = oldKeys.length * 2;
    this.keys = new Float64Array(cap);
    this.heads = new Int32Array(cap).fill(EMPTY);
    this.mask = cap - 1;
    this.shift = 32 - Math.log2(cap);
    for (let s = 0; s < oldKeys.length; s++) {
      if (oldHeads[s] === EMPTY) continue;
      let i = this.slotOf(oldKeys[s]);
      while (this.heads[i] !== EMPTY) i = (i + 1) & this.mask;
      this.keys[i] = oldKeys[s];
      this.heads[i] = oldHeads[s];
    }
  }
}
