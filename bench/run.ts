// `npm run bench -- NAME [--json] [options]`: runs bench/NAME.ts. Each bench
// module exports `run(argv): Promise<object>` and returns its result object
// (with a "bench" field); with --json it is printed as one JSON line, without
// it as indented JSON for people.
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

interface BenchModule { run(argv: string[]): Promise<Record<string, unknown>> }

const here = dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here).filter((f) => f.endsWith('.js') && f !== 'run.js' && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));

async function main(argv: string[]): Promise<number> {
  const name = argv.find((a) => !a.startsWith('-'));
  if (!name || !available.includes(name)) {
    process.stderr.write(`usage: npm run bench -- NAME [--json]\nbenchmarks: ${available.join(', ') || '(none built)'}\n`);
    return 2;
  }
  const mod = (await import(`./${name}.js`)) as BenchModule;
  const result = await mod.run(argv.filter((a) => a !== name));
  process.stdout.write(argv.includes('--json') ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});
