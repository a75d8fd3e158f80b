// A fault nobody read is still counted (native-shim/waiters.c): a vCPU that
// faults on a missing page sleeps with its message queued on the
// userfaultfd; here nobody reads the userfaultfd at all, and the main-stream
// receiver places the page. Its placement finds the vCPU asleep on it (the
// vCPU's bit in the waiting map, its access stamp) and reports the fault,
// dated by the stamp, before it wakes it: one FAULT of kind "unread" with
// the vCPU's thread id, then the PLACED event of the run. With the stamps
// off (no blocktime) the placement only wakes it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestRam, VcpuSet, parseWorkload } from '../../src/vm/index.js';
import { Userfaultfd } from '../../src/uffd/index.js';
import { NativeBlock } from '../../src/native/memory.js';
import {
  PageChannel, ReceiverMode, RECEIVER_CONTROL_BYTES, ChannelEvent, CHANNEL_EVENT_MASK, FAULT_CAUSE_SHIFT,
} from '../../src/native/page-channel.js';
import { writeRecordHeader, RECORD_HEADER_BYTES, REC_PAGES } from '../../src/migration/wire.js';
import { FaultCause } from '../../src/blocktime/trace.js';
import { monotonicBaseNs } from '../../src/blocktime/clock.js';
import { socketPair } from '../helpers/socket-pair.js';
import { requireUffd } from '../helpers/uffd-available.js';

const PS = 4096;
const RUN = 16; // the vCPU sweeps these pages; the receiver places them in one run
const maybe = requireUffd() ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'pc-unread-')); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

function pagesRecord(first: number, count: number): Buffer {
  const b = Buffer.alloc(RECORD_HEADER_BYTES + count * PS, 7);
  writeRecordHeader(b, 0, REC_PAGES, 0, count, first * PS);
  return b;
}

maybe('faults nobody read', () => {
  test.each([true, false])('stamps %s: a vCPU asleep on a page the receiver places is reported once, then woken', async (stamping) => {
    const ram = GuestRam.create(4 * RUN * PS);
    const uffd = Userfaultfd.open({ optionalFeatures: ['THREAD_ID'] });
    uffd.register(ram.base, ram.bytes, { missing: true });
    const flags = new NativeBlock(ram.pages);
    const control = new NativeBlock(RECEIVER_CONTROL_BYTES);
    const vcpus = await VcpuSet.create(ram, 1, parseWorkload(`sweep,end=${(RUN * PS) / 1024}K`, ram.bytes), { paused: true });
    const [mine, peer] = await socketPair(dir, `r-${stamping}.sock`, true); // the receiver reads a dup: Node must not
    peer.on('data', () => { /* RP_ACK */ });
    for (const s of [mine, peer]) s.on('error', () => { /* reset as the receiver stops */ });
    const rc = PageChannel.startStreamReceiver({ sock: mine, ramBase: ram.base, pageSize: PS, pages: ram.pages, flags: flags.address, control });
    const stamps = stamping ? vcpus.accessStamps() : null;
    try {
      stamps?.enable(monotonicBaseNs());
      rc.resume(ReceiverMode.Pages | ReceiverMode.Postcopy, uffd.fd, 0, stamps);
      vcpus.resume();
      await sleep(30);
      expect(vcpus.progress(0).accesses).toBe(0); // asleep on page 0, its fault unread
      peer.write(pagesRecord(0, RUN));
      // the receiver pushes the run's PLACED event after the wake
      const events: [number, number, number, number][] = [];
      const placedYet = () => events.some(([k]) => k === ChannelEvent.Placed);
      for (let i = 0; i < 200 && (vcpus.progress(0).sweeps === 0 || !placedYet()); i++) {
        await sleep(5);
        rc.drain((kind, page, arg, t) => events.push([kind, page, arg, t]));
      }
      expect(vcpus.progress(0).sweeps).toBeGreaterThan(0); // woken, and the run was all there
      const faults = events.filter(([k]) => (k & CHANNEL_EVENT_MASK) === ChannelEvent.Fault);
      const placed = events.filter(([k]) => k === ChannelEvent.Placed);
      expect(placed.map(([, page, count]) => [page, count])).toEqual([[0, RUN]]);
      if (!stamping) {
        expect(faults).toEqual([]);
        return;
      }
      expect(faults.map(([k, page, tid]) => [k >> FAULT_CAUSE_SHIFT, page, tid])).toEqual([[FaultCause.Unread, 0, vcpus.threadIds()[0]]]);
      // dated by the access stamp, before the page came: it slept about the 30 ms
      expect(placed[0][3] - faults[0][3]).toBeGreaterThan(25e6);
    } finally {
      stamps?.disable();
      rc.dispose();
      peer.destroy();
      uffd.close(); // first: a vCPU still asleep on a page is woken and goes on without it
      await vcpus.stop();
      flags.free();
      control.free();
      ram.dispose();
    }
  });
});
