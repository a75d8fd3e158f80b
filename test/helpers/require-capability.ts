// The rule for tests that need something of the machine (userfaultfd, QEMU):
// without it a developer's run skips them with the reason printed; in CI
// (CI=true) that is a failure, so a broken CI machine cannot pass by skipping.

/** true when `probe` says yes; false (reason printed) when not; throws when not and CI=true */
export function requireCapability(what: string, probe: () => { ok: boolean; reason: string }): boolean {
  const { ok, reason } = probe();
  if (ok) return true;
  if (process.env.CI === 'true') throw new Error(`${what} is required in CI but unavailable: ${reason}`);
  process.stderr.write(`skipping ${what} tests: ${reason}\n`);
  return false;
}
