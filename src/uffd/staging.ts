// Native staging pages for UFFDIO_COPY: page bytes that arrive from a socket
// into a JS Buffer are copied into a slot here (one memcpy, no allocation),
// and the slot's native address is the copy's source. The area is small (a run
// of pages), so one Buffer covers it: at most one MemoryWindows window.
import { NativeMapping } from '../native/memory.js';
import { WINDOW_BYTES } from '../native/memory-windows.js';
import { badArgument } from './errors.js';

export class StagingArea {
  readonly #map: NativeMapping;
  readonly #buf: Buffer;
  readonly slots: number;
  readonly slotSize: number;
  /** native address of slot 0 */
  readonly base: number;

  private constructor(map: NativeMapping, slots: number, slotSize: number) {
    this.#map = map;
    this.#buf = map.windows.view(0, map.bytes);
    this.slots = slots;
    this.slotSize = slotSize;
    this.base = map.address;
  }

  /** `slots` slots of `slotSize` bytes (a multiple of 4096) each, mmap'ed */
  static create(slots: number, slotSize = 4096): StagingArea {
    if (!(Number.isSafeInteger(slots) && slots > 0)) throw badArgument(`staging: slot count ${slots} must be a positive integer`);
    if (!(Number.isSafeInteger(slotSize) && slotSize > 0 && slotSize % 4096 === 0)) {
      throw badArgument(`staging: slot size ${slotSize} must be a positive multiple of 4096`);
    }
    if (slots * slotSize > WINDOW_BYTES) {
      throw badArgument(`staging: ${slots} slots of ${slotSize} bytes exceed ${WINDOW_BYTES} bytes (one Buffer's window)`);
    }
    return new StagingArea(NativeMapping.create(slots * slotSize), slots, slotSize);
  }

  /** native address of a slot (page-aligned) */
  address(slot: number): number {
    return this.base + slot * this.slotSize;
  }

  /** copies slotSize bytes of src starting at offset into the slot */
  write(slot: number, src: Uint8Array, offset = 0): void {
    if (!(slot >= 0 && slot < this.slots)) throw badArgument(`staging: slot ${slot} is outside 0..${this.slots - 1}`);
    const end = offset + this.slotSize;
    if (!(offset >= 0) || end > src.length) {
      throw badArgument(`staging: source has ${src.length} bytes, ${this.slotSize} needed from offset ${offset}`);
    }
    Buffer.prototype.copy.call(src, this.#buf, slot * this.slotSize, offset, end);
  }

  /** a Buffer over the slot (no copy), e.g. to fill a pattern or receive into it directly */
  slot(slot: number): Buffer {
    if (!(slot >= 0 && slot < this.slots)) throw badArgument(`staging: slot ${slot} is outside 0..${this.slots - 1}`);
    return this.#buf.subarray(slot * this.slotSize, (slot + 1) * this.slotSize);
  }

  dispose(): void {
    this.#map.dispose();
  }
}
