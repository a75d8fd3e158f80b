// A vCPU's workload state, enough to stop it on the source and resume it on
// the destination exactly where it was, and its fixed 32-byte wire encoding
// (little-endian u64s: position, sweeps, accesses, rng).

export interface VcpuState {
  /** sweep: guest page index the vCPU touches next */
  position: number;
  /** completed sweeps */
  sweeps: number;
  /** completed accesses */
  accesses: number;
  /** random/hotset generator state (xorshift64*), never 0 */
  rng: bigint;
}

export const VCPU_STATE_BYTES = 32;

function put64(buf: Uint8Array, off: number, v: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 4294967296), true);
}

/** writes s into buf[off, off+32) */
export function encodeVcpuState(s: VcpuState, buf: Uint8Array, off = 0): void {
  if (off < 0 || off + VCPU_STATE_BYTES > buf.length) throw new RangeError(`vCPU state needs ${VCPU_STATE_BYTES} bytes at offset ${off}`);
  put64(buf, off, s.position);
  put64(buf, off + 8, s.sweeps);
  put64(buf, off + 16, s.accesses);
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setBigUint64(off + 24, BigInt.asUintN(64, s.rng), true);
}

/** reads the state at buf[off, off+32) */
export function decodeVcpuState(buf: Uint8Array, off = 0): VcpuState {
  if (off < 0 || off + VCPU_STATE_BYTES > buf.length) throw new RangeError(`vCPU state needs ${VCPU_STATE_BYTES} bytes at offset ${off}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const u64 = (at: number): number => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 4294967296;
  return { position: u64(off), sweeps: u64(off + 8), accesses: u64(off + 16), rng: dv.getBigUint64(off + 24, true) };
}
