// The koffi binding of native-shim (libpostcopy_shim.so): finds the built
// library, checks that its control-block layout matches ours, and declares
// its functions. Nothing here runs a thread; vcpu.ts and fault-handler.ts use
// these declarations.
import koffi from 'koffi';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KoffiFunc } from './libc.js';
import { VCPU_BLOCK_SIZE, VCPU_OFF_POSITION } from './vcpu-layout.js';

/** struct pc_channel_status: sizeof * 1000 + offsetof(stats) (page-channel.ts mirrors it) */
const CHANNEL_LAYOUT = 416 * 1000 + 16;

/** 9: the vCPUs' kernel samples (vcpu_sample.c); 10: each page-path thread takes the RAM block table (channel.h struct pc_ramblock);
 *  11: recovery's received-page bitmap (recv_bitmap.c) */
export const SHIM_VERSION = 11;
const LIB_NAME = 'libpostcopy_shim.so';

/** the library path: $POSTCOPY_SHIM, else native-shim/build/ of the nearest enclosing package */
function findLibrary(): string {
  const env = process.env.POSTCOPY_SHIM;
  if (env) return env;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'native-shim', 'build', LIB_NAME);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`${LIB_NAME} not found (looked in native-shim/build/ above ${dirname(fileURLToPath(import.meta.url))}); ` +
    `build it with 'npm run build' (needs a C compiler, e.g. apt-get install gcc libc6-dev)`);
}

export interface Shim {
  version(): number;
  vcpuStart(blocks: bigint, index: number): number;
  vcpuCommand(blocks: bigint, first: number, count: number, cmd: number): void;
  vcpuJoin: KoffiFunc<[blocks: bigint, count: number], number>;
  vcpuWaitStates: KoffiFunc<[blocks: bigint, count: number, mask: number, timeoutMs: number], number>;
  faultHandlerRun: KoffiFunc<[uffd: number, src: number, pageSize: number, expected: number, stopFd: number], number | bigint>;
  pageDigests(base: number, pageSize: number, first: number, count: number, out: BigUint64Array): void;
  copyBytes(dst: Uint8Array, dstPos: number, src: Uint8Array, srcPos: number, n: number): void;
  threadCpuNs(tid: number): number;
  streamBaseline: KoffiFunc<[bytes: number, tcp: number], number | bigint>;
  faultThreadStart(uffd: number, sock: number, ramBase: number, pageSize: number, pages: number, flags: number, readahead: number,
    status: bigint, ring: bigint, ringSize: number, blocktime: number, clockBase: number, vcpus: bigint | null, nvcpus: number, zeroSrc: number,
    heartbeatMs: number, blocks: number, nblocks: number): number | bigint;
  faultThreadAttach(handle: bigint, sock: number, heartbeatMs: number): number;
  faultThreadDetach(handle: bigint): number;
  pageServerStart(sock: number, ramBase: number, pageSize: number, pages: number, flags: number, hint: bigint | null,
    status: bigint, ring: bigint, ringSize: number, clockBase: number, heartbeatMs: number, blocks: number, nblocks: number): number | bigint;
  streamSenderStart(sock: number, ramBase: number, pageSize: number, pages: number, flags: number,
    status: bigint, ring: bigint, ringSize: number, clockBase: number, blocks: number, nblocks: number): number | bigint;
  streamSenderBytes(handle: bigint, bytes: Uint8Array, len: number): number;
  streamSenderPass(handle: bigint, wrap: number): number;
  streamSenderInterrupt(handle: bigint): number;
  streamSenderStop(handle: bigint, last: Uint8Array, len: number): number;
  streamSenderAbort(handle: bigint): number;
  streamReceiverStart(sock: number, ramBase: number, pageSize: number, pages: number, flags: number, control: bigint, controlBytes: number,
    status: bigint, ring: bigint, ringSize: number, clockBase: number, blocks: number, nblocks: number): number | bigint;
  streamReceiverResume(handle: bigint, mode: number, uffd: number, zeroSrc: number, vcpus: bigint | null, nvcpus: number): number;
  channelStop(handle: bigint): number;
  remoteFaultBaseline: KoffiFunc<[pages: number, tcp: number], number>;
  recvBitmapBuild(flags: Uint8Array, pages: number, received: number, out: Uint8Array): number | bigint;
  recvBitmapApply(flags: Uint8Array, pages: number, bitmap: Uint8Array, has: number, need: number, counts: Float64Array): void;
}

let shim: Shim | undefined;

/** loads the shim once (throws a clear error when it is missing or stale) */
export function loadShim(): Shim {
  if (shim) return shim;
  const path = findLibrary();
  const lib = koffi.load(path);
  const version = lib.func('int postcopy_shim_version(void)') as () => number;
  if (version() !== SHIM_VERSION) {
    throw new Error(`${path} is version ${version()}, this program needs ${SHIM_VERSION}: rebuild it with 'npm run build'`);
  }
  const layout = (lib.func('int pc_vcpu_layout(void)') as () => number)();
  if (layout !== VCPU_BLOCK_SIZE * 1000 + VCPU_OFF_POSITION) {
    throw new Error(`${path}: vCPU control block layout ${layout} does not match the binding; rebuild with 'npm run build'`);
  }
  const channel = (lib.func('int pc_channel_layout(void)') as () => number)();
  if (channel !== CHANNEL_LAYOUT) {
    throw new Error(`${path}: page channel status layout ${channel} does not match the binding; rebuild with 'npm run build'`);
  }
  shim = {
    version,
    vcpuStart: lib.func('int pc_vcpu_start(void *vcpus, int index)') as Shim['vcpuStart'],
    vcpuCommand: lib.func('void pc_vcpu_command(void *vcpus, int first, int count, int cmd)') as Shim['vcpuCommand'],
    vcpuJoin: lib.func('int pc_vcpu_join(void *vcpus, int count)') as unknown as Shim['vcpuJoin'],
    vcpuWaitStates: lib.func('int pc_vcpu_wait_states(void *vcpus, int count, int mask, int timeout_ms)') as unknown as
      Shim['vcpuWaitStates'],
    faultHandlerRun: lib.func('int64_t pc_fault_handler_run(int uffd, uint64_t src, uint64_t page_size, int64_t expected, int stop_fd)') as
      unknown as Shim['faultHandlerRun'],
    pageDigests: lib.func('void pc_page_digests(uint64_t base, uint64_t page_size, uint64_t first, uint64_t count, _Out_ uint64_t *out)') as
      unknown as Shim['pageDigests'],
    copyBytes: lib.func('void pc_copy_bytes(uint8_t *dst, uint64_t dst_pos, const uint8_t *src, uint64_t src_pos, uint64_t n)') as
      Shim['copyBytes'],
    threadCpuNs: lib.func('double pc_thread_cpu_ns(int tid)') as Shim['threadCpuNs'],
    streamBaseline: lib.func('int64_t pc_stream_baseline(uint64_t bytes, int tcp)') as unknown as Shim['streamBaseline'],
    faultThreadStart: lib.func('uint64_t pc_fault_thread_start(int uffd, int sock, uint64_t ram_base, uint64_t page_size, ' +
      'uint64_t pages, uint64_t flags, uint32_t readahead, void *status, void *ring, uint32_t ring_size, int blocktime, double clock_base, ' +
      'const void *vcpus, int nvcpus, uint64_t zero_src, uint32_t heartbeat_ms, uint64_t blocks, uint32_t nblocks)') as
      Shim['faultThreadStart'],
    faultThreadAttach: lib.func('int pc_fault_thread_attach(uint64_t handle, int sock, uint32_t heartbeat_ms)') as Shim['faultThreadAttach'],
    faultThreadDetach: lib.func('int pc_fault_thread_detach(uint64_t handle)') as Shim['faultThreadDetach'],
    pageServerStart: lib.func('uint64_t pc_page_server_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, ' +
      'uint64_t flags, void *hint, void *status, void *ring, uint32_t ring_size, double clock_base, uint32_t heartbeat_ms, ' +
      'uint64_t blocks, uint32_t nblocks)') as Shim['pageServerStart'],
    streamSenderStart: lib.func('uint64_t pc_stream_sender_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, ' +
      'uint64_t flags, void *status, void *ring, uint32_t ring_size, double clock_base, uint64_t blocks, uint32_t nblocks)') as
      Shim['streamSenderStart'],
    streamSenderBytes: lib.func('int pc_stream_sender_bytes(uint64_t handle, const uint8_t *data, uint32_t len)') as Shim['streamSenderBytes'],
    streamSenderPass: lib.func('int pc_stream_sender_pass(uint64_t handle, int wrap)') as Shim['streamSenderPass'],
    streamSenderInterrupt: lib.func('int pc_stream_sender_interrupt(uint64_t handle)') as Shim['streamSenderInterrupt'],
    streamSenderStop: lib.func('int pc_stream_sender_stop(uint64_t handle, const uint8_t *last, uint32_t len)') as Shim['streamSenderStop'],
    streamSenderAbort: lib.func('int pc_stream_sender_abort(uint64_t handle)') as Shim['streamSenderAbort'],
    streamReceiverStart: lib.func('uint64_t pc_stream_receiver_start(int sock, uint64_t ram_base, uint64_t page_size, uint64_t pages, ' +
      'uint64_t flags, void *ctl, uint32_t ctl_cap, void *status, void *ring, uint32_t ring_size, double clock_base, ' +
      'uint64_t blocks, uint32_t nblocks)') as
      Shim['streamReceiverStart'],
    streamReceiverResume: lib.func('int pc_stream_receiver_resume(uint64_t handle, int mode, int uffd, uint64_t zero_src, const void *vcpus, int nvcpus)') as Shim['streamReceiverResume'],
    channelStop: lib.func('int pc_channel_stop(uint64_t handle)') as Shim['channelStop'],
    remoteFaultBaseline: lib.func('double pc_remote_fault_baseline(uint64_t pages, int tcp)') as unknown as Shim['remoteFaultBaseline'],
    recvBitmapBuild: lib.func('uint64_t pc_recv_bitmap_build(const uint8_t *flags, uint64_t pages, uint32_t received, uint8_t *out)') as Shim['recvBitmapBuild'],
    recvBitmapApply: lib.func('void pc_recv_bitmap_apply(uint8_t *flags, uint64_t pages, const uint8_t *bitmap, uint32_t has, uint32_t need, double *counts)') as Shim['recvBitmapApply'],
  };
  return shim;
}
