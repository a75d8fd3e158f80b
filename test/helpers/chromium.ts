// A real headless browser for the report's tests and its screenshot
// script: Debian's chromium driven by playwright-core, with a fresh profile
// and nothing that reaches the network. Without chromium a developer's run
// skips with the reason printed; in CI (CI=true, .ci/run installs it) that
// is a failure.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** true when chromium is installed; false (reason printed) when not; throws in CI */
export function haveChromium(): boolean {
  if (existsSync(CHROMIUM)) return true;
  if (process.env.CI === 'true') throw new Error(`chromium is required in CI (.ci/run installs it) but ${CHROMIUM} is missing`);
  process.stderr.write(`skipping: ${CHROMIUM} is not installed (apt-get install chromium)\n`);
  return false;
}

/** A headless browser with a fresh profile; close() also removes the profile. */
export async function openBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
