// Turning a raw uffd_msg into a tagged union (the Rust crate's event.rs), for
// code that is not on the hot path: the fault handler itself uses the
// allocation-free accessors of Userfaultfd instead.
import * as abi from './abi.js';

export type UffdEvent =
  | { kind: 'pagefault'; address: number; flags: number; write: boolean; wp: boolean; minor: boolean; threadId: number }
  | { kind: 'fork'; ufd: number }
  | { kind: 'remap'; from: number; to: number; len: number }
  | { kind: 'remove'; start: number; end: number }
  | { kind: 'unmap'; start: number; end: number }
  | { kind: 'unknown'; event: number };

/** decodes the 32-byte message at byte offset off of buf */
export function decodeEvent(buf: Uint8Array, off: number): UffdEvent {
  const dv = new DataView(buf.buffer, buf.byteOffset + off, abi.UFFD_MSG_SIZE);
  const u64 = (at: number): number => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 4294967296;
  const event = dv.getUint8(abi.MSG_EVENT);
  switch (event) {
    case abi.EVENT_PAGEFAULT: {
      const flags = dv.getUint32(abi.MSG_PF_FLAGS, true);
      return {
        kind: 'pagefault', address: u64(abi.MSG_PF_ADDRESS), flags,
        write: (flags & abi.PAGEFAULT_FLAG_WRITE) !== 0, wp: (flags & abi.PAGEFAULT_FLAG_WP) !== 0,
        minor: (flags & abi.PAGEFAULT_FLAG_MINOR) !== 0, threadId: dv.getUint32(abi.MSG_PF_PTID, true),
      };
    }
    case abi.EVENT_FORK: return { kind: 'fork', ufd: dv.getUint32(abi.MSG_FORK_UFD, true) };
    case abi.EVENT_REMAP:
      return { kind: 'remap', from: u64(abi.MSG_REMAP_FROM), to: u64(abi.MSG_REMAP_TO), len: u64(abi.MSG_REMAP_LEN) };
    case abi.EVENT_REMOVE: return { kind: 'remove', start: u64(abi.MSG_REMOVE_START), end: u64(abi.MSG_REMOVE_END) };
    case abi.EVENT_UNMAP: return { kind: 'unmap', start: u64(abi.MSG_REMOVE_START), end: u64(abi.MSG_REMOVE_END) };
    default: return { kind: 'unknown', event };
  }
}
