// Whether this machine can run the userfaultfd tests: userfaultfd opens.
// Skipped with the reason, or a failure in CI (require-capability.ts).
import { Userfaultfd } from '../../src/uffd/index.js';
import { requireCapability } from './require-capability.js';

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
  return requireCapability('userfaultfd', probe);
}
