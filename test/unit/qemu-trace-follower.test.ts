// `attach --destination-trace`'s follower on a log QEMU is still writing
// (test/helpers/qemu-trace-log.ts's hand-checked scenario, written in
// steps): no figures before the first fault, live exact figures from the
// whole lines so far (a line QEMU has not finished is left for later), final
// ones once the cleanup is logged, and the kernel's samples put in among the
// events on the log's wall clock.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TraceFollower } from '../../src/qemu/trace-follower.js';
import { BASE_S, SCENARIO, VCPU_TIDS, qemuLog } from '../helpers/qemu-trace-log.js';

let dir: string;
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'follower-')); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3;

test('a growing 7.2 log: nothing before the first fault, live figures so far, final ones after the cleanup', async () => {
  const log = join(dir, 'dest.log');
  const lines = qemuLog(SCENARIO, '7.2');
  const f = new TraceFollower(log, VCPU_TIDS);
  expect(await f.report()).toEqual({ why: expect.stringMatching(/dest\.log does not exist \(yet\): start the destination with -D/) });

  writeFileSync(log, `${lines[0]}\n`); // postcopy_ram_enable_notify only
  expect(await f.report()).toEqual({ why: expect.stringMatching(/no fault and its placement logged yet/) });

  // up to vCPU 0's fault on page 2 (10 ms), and half of the next line
  const cut = lines.findIndex((l) => l.includes('offset=0x85e9000'));
  appendFileSync(log, `${lines.slice(1, cut + 1).join('\n')}\n${lines[cut + 1].slice(0, 30)}`);
  const live = await f.report();
  if ('why' in live) throw new Error(live.why);
  const x = live.report['x-blocktime'];
  expect(x.state).toBe('live');
  expect(x.faults).toBe(3);
  // vCPU 0: page 0 (3 ms) closed, page 2 open since 10 ms: counted up to the last logged event, its own fault
  expect(ms(x.vcpus[0].blocktimeNs)).toBe(3);
  expect(ms(x.vcpus[1].blocktimeNs)).toBe(4);
  expect(ms(x.totalBlocktimeNs)).toBe(2);

  appendFileSync(log, `${lines[cut + 1].slice(30)}\n${lines.slice(cut + 2).join('\n')}\n`);
  const final = await f.report();
  if ('why' in final) throw new Error(final.why);
  const y = final.report['x-blocktime'];
  expect(y.state).toBe('final');
  expect(ms(y.vcpus[0].blocktimeNs)).toBe(13);
  expect(ms(y.vcpus[1].blocktimeNs)).toBe(4);
  expect(ms(y.totalBlocktimeNs)).toBe(2);
  expect(y.faults).toBe(5);
  expect(y.nonVcpuFaults).toBe(1);
  expect(final.replayed72).toEqual({ 'postcopy-blocktime': 2, 'postcopy-vcpu-blocktime': [13, 4] });
  f.close();
});

test('kernel samples on the log\'s wall clock give the kernel column, the window closing at the end', async () => {
  const log = join(dir, 'kernel.log');
  writeFileSync(log, `${qemuLog(SCENARIO, '7.2').join('\n')}\n`);
  const f = new TraceFollower(log, VCPU_TIDS);
  const at = (s: number): number => BASE_S * 1e9 + s * 1e9;
  // vCPU 0 over [0.999 s, 1.050 s]: 51 ms, of which 38 ms on a CPU and none waiting: 13 ms asleep, as ours
  f.addSample({ vcpu: 0, realtimeNs: at(0.999), sample: { runNs: 1e9, waitNs: 5e6 } });
  f.addSample({ vcpu: 1, realtimeNs: at(0.999), sample: 'no schedstat for thread 14783' });
  // taken once the cleanup (1.100 s) was logged: the end moves with it
  f.addSample({ vcpu: 0, realtimeNs: at(1.2), sample: { runNs: 1e9 + 188e6, waitNs: 5e6 } });
  const r = await f.report();
  if ('why' in r) throw new Error(r.why);
  const [v0, v1] = r.report['x-blocktime'].vcpus;
  expect(Math.abs((v0.kernelBlockedNs as number) - 13e6)).toBeLessThan(1000);
  expect(Math.abs((v0.kernelWindowBlocktimeNs as number) - 13e6)).toBeLessThan(1000);
  expect(v1.kernelUnavailable).toBe('no schedstat for thread 14783');
  expect(r.report['x-blocktime'].state).toBe('final');
  f.close();
});
