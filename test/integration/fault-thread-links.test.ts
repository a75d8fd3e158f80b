// The destination's fault thread and its links (postcopy recovery), on its
// own over real unix sockets: a pause drops its link (detach), a recovery
// gives it a new one (attach). TypeScript may make both requests before the
// thread looked at the first (a recovery right after a pause, a loaded
// machine): the thread must end on what was asked last, never drop the new
// link for the pause that came before it, nor keep one a pause came after.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type net from 'node:net';
import { NativeMapping, NativeBlock } from '../../src/native/memory.js';
import { PageChannel, FaultThreadStat } from '../../src/native/page-channel.js';
import { Userfaultfd } from '../../src/uffd/index.js';
import { socketPair } from '../helpers/socket-pair.js';
import { requireUffd } from '../helpers/uffd-available.js';

const PS = 4096;
const PAGES = 16;
const ROUNDS = 100;
const run = requireUffd() ? describe : describe.skip;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

run('fault thread links', () => {
  let dir: string;
  let ram: NativeMapping;
  let flags: NativeBlock;
  let uffd: Userfaultfd;
  let ch: PageChannel;
  const peers: net.Socket[] = [];
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pc-links-'));
    ram = NativeMapping.create(PAGES * PS);
    flags = new NativeBlock(PAGES);
    uffd = Userfaultfd.open();
    const [mine, peer] = await socketPair(dir, 'first.sock');
    peers.push(peer);
    ch = PageChannel.startFaultThread({ uffd: uffd.fd, sock: mine, ramBase: ram.address, pageSize: PS, pages: PAGES, flags: flags.address, blocktime: false, readahead: 0 });
  });
  afterEach(() => {
    ch.dispose();
    for (const p of peers.splice(0)) p.destroy();
    uffd.close();
    flags.free();
    ram.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  /** a new link for the thread; its peer end notes whether the thread closed it */
  async function link(name: string): Promise<{ mine: net.Socket; closed: () => boolean }> {
    const [mine, peer] = await socketPair(dir, name);
    peers.push(peer);
    let closed = false;
    peer.on('data', () => undefined);
    peer.on('end', () => { closed = true; });
    peer.on('close', () => { closed = true; });
    return { mine, closed: () => closed };
  }

  /** until the thread took `links` links in all, and its state is not 'running' for a moment only */
  async function taken(links: number): Promise<void> {
    for (const t0 = Date.now(); ch.stat(FaultThreadStat.Links) < links; await sleep(1)) {
      if (Date.now() - t0 > 5000) throw new Error(`the thread took ${ch.stat(FaultThreadStat.Links)} links, not ${links}`);
    }
    await sleep(5);
  }

  test(`a pause and then a recovery, asked back to back (${ROUNDS} times): the thread runs on the new link`, async () => {
    const wrong: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const l = await link(`r${i}.sock`);
      ch.detach();
      ch.attach(l.mine, 0);
      await taken(i + 2);
      if (ch.state !== 'running' || l.closed()) wrong.push(`round ${i}: ${ch.state} (${ch.error}), new link closed: ${l.closed()}`);
    }
    expect(wrong).toEqual([]);
  });

  test(`a recovery and then a pause, asked back to back (${ROUNDS} times): the thread is paused, the link it was given closed`, async () => {
    const wrong: string[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const l = await link(`p${i}.sock`);
      ch.attach(l.mine, 0);
      ch.detach();
      await taken(i + 2);
      for (const t0 = Date.now(); !l.closed() && Date.now() - t0 < 2000;) await sleep(1);
      if (ch.state !== 'paused' || !l.closed()) wrong.push(`round ${i}: ${ch.state} (${ch.error}), link closed: ${l.closed()}`);
    }
    expect(wrong).toEqual([]);
  });
});
