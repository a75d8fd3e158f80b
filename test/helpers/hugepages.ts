// Huge pages for the tests that need them: reserve N more in the kernel's
// pool (/proc/sys/vm/nr_hugepages, shared by everyone on the machine, so
// always relative to what is there and always given back), mount a private
// hugetlbfs on a temporary directory, and undo both on release() — also when
// the test failed, and at the worker's exit should release() never run. A
// machine that cannot give them skips the tests with the reason printed; in
// CI that is a failure (require-capability.ts).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCapability } from './require-capability.js';

export const HUGE_PAGE = 2 * 1024 * 1024;
const NR = '/proc/sys/vm/nr_hugepages';
const POOL = `/sys/kernel/mm/hugepages/hugepages-${HUGE_PAGE / 1024}kB`;
/** serialises the read-modify-write of nr_hugepages between test workers */
const LOCK = join(tmpdir(), 'postcopy-nr-hugepages.lock');

export interface HugePages {
  /** the hugetlbfs mount (2 MiB pages), for -mem-path */
  readonly dir: string;
  /** huge pages this reservation added to the pool */
  readonly pages: number;
  /** unmounts and gives the pages back; idempotent */
  release(): void;
}

const live = new Set<HugePages>();
process.on('exit', () => { for (const h of [...live]) h.release(); });

function readNumber(path: string): number {
  return Number(readFileSync(path, 'utf8').trim());
}

function locked<T>(f: () => T): T {
  for (let i = 0; ; i++) {
    try {
      mkdirSync(LOCK);
      break;
    } catch {
      if (i > 2000) { // a lock left by a killed worker (10 s): take it
        try { rmdirSync(LOCK); } catch { /* someone else did */ }
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
  try {
    return f();
  } finally {
    rmdirSync(LOCK);
  }
}

/** A private hugetlbfs mount of `pagesize` pages on a new temporary directory (root). */
export function mountHugetlbfs(pagesize: '2M' | '1G'): { dir: string; unmount(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-hugetlbfs-'));
  try {
    execFileSync('mount', ['-t', 'hugetlbfs', '-o', `pagesize=${pagesize},mode=0700`, 'none', dir], { stdio: 'pipe' });
  } catch (e) {
    rmdirSync(dir);
    throw new Error(`mounting hugetlbfs: ${(e as Error).message}`);
  }
  return {
    dir,
    unmount() {
      try { execFileSync('umount', [dir], { stdio: 'pipe' }); } catch { /* not mounted */ }
      try { rmdirSync(dir); } catch { /* gone */ }
    },
  };
}

/** Adds `pages` huge pages to the pool and mounts hugetlbfs; throws with the reason when the kernel says no. */
export function reserveHugePages(pages: number): HugePages {
  const added = locked(() => {
    const before = readNumber(NR);
    writeFileSync(NR, String(before + pages));
    const now = readNumber(NR);
    if (now < before + pages) { // memory too fragmented, or too little of it
      writeFileSync(NR, String(before));
      throw new Error(`the kernel gave ${now - before} of ${pages} huge pages of 2 MiB (nr_hugepages ${before} -> ${now})`);
    }
    return pages;
  });
  let mount: { dir: string; unmount(): void };
  try {
    mount = mountHugetlbfs('2M');
  } catch (e) {
    locked(() => writeFileSync(NR, String(Math.max(0, readNumber(NR) - added))));
    throw e;
  }
  let released = false;
  const h: HugePages = {
    dir: mount.dir, pages: added,
    release() {
      if (released) return;
      released = true;
      live.delete(h);
      mount.unmount();
      locked(() => writeFileSync(NR, String(Math.max(0, readNumber(NR) - added))));
    },
  };
  live.add(h);
  return h;
}

/** huge pages free and not reserved in the pool now */
export function freeHugePages(): number {
  return readNumber(join(POOL, 'free_hugepages')) - readNumber(join(POOL, 'resv_hugepages'));
}

/**
 * `pages` huge pages and a hugetlbfs mount for a test file (beforeAll), or
 * null when this machine cannot give them (reason printed; throws in CI).
 * The caller releases them in afterAll.
 */
export function requireHugePages(pages: number): HugePages | null {
  let got: HugePages | null = null;
  const ok = requireCapability('huge pages', () => {
    try {
      readNumber(NR);
      readNumber(join(POOL, 'free_hugepages'));
    } catch (e) {
      return { ok: false, reason: `this kernel has no 2 MiB huge pages (${(e as Error).message})` };
    }
    try {
      got = reserveHugePages(pages);
      return { ok: true, reason: '' };
    } catch (e) {
      return { ok: false, reason: `${(e as Error).message} (needs root to write ${NR} and to mount hugetlbfs)` };
    }
  });
  return ok ? got : null;
}
