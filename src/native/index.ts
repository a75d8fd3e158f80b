// The koffi binding of native-shim and the libc/memory helpers that the rest
// of the program reaches native code through. Re-exports only.
export { NativeMapping, NativeBlock, NativeMappingError } from './memory.js';
export { MemoryWindows, MemoryWindowsError, WINDOW_BYTES, PAGE_BYTES } from './memory-windows.js';
export { NativeVcpus } from './vcpu.js';
export type { NativeWorkload } from './vcpu.js';
export { startCFaultHandler } from './fault-handler.js';
export type { CFaultHandler } from './fault-handler.js';
export { pageDigests } from './digest.js';
export { streamBaselineMbps, remoteFaultBaselineUs } from './stream-baseline.js';
export { loadShim, SHIM_VERSION } from './shim.js';
export * as vcpuLayout from './vcpu-layout.js';
export { pinProcessToCpu, currentCpu } from './affinity.js';
export { threadCpuNs } from './thread-time.js';
