// Whether this machine can run the userfaultfd tests. Without userfaultfd a
// developer's run skips them with the reason printed; in CI (CI=true) that is
// a failure, so a broken CI machine cannot pass by skipping everything.
import { Userfaultfd } from '../../src/uffd/index.js';

let cached: { ok: boolean; reason: string } | undefined;

function probe(): { ok: boolean; reason: string } {
  if (cached) return cached;
  try {
    Userfaultfd.open().close();
    cached = { ok: true, reason: '' };
  } catch (e) {
    cached = { ok: false, reason: e instanceof Error ? e.message : String(e) };
  }
  return cached;
}

/** true when userfaultfd works; false (reason printed) when not; throws when not and CI=true */
export function requireUffd(): boolean {
  const { ok, reason } = probe();
  if (ok) return true;
  if (process.env.CI === 'true') throw new Error(`userfaultfd is required in CI but unavailable: ${reason}`);
  process.stderr.write(`skipping userfaultfd tests: ${reason}\n`);
  return false;
}
