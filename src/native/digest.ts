// Per-page 64-bit digests of native memory, computed by native-shim.
import { loadShim } from './shim.js';

/** digests of pages [first, first+count) of the memory at base */
export function pageDigests(base: number, pageSize: number, first: number, count: number): BigUint64Array {
  const out = new BigUint64Array(count);
  if (count > 0) loadShim().pageDigests(base, pageSize, first, count, out);
  return out;
}
