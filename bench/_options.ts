// Numeric `--name VALUE` options shared by the benchmarks (files starting with
// `_` are not benchmarks: run.ts skips them).

/** The number after `--name` in argv, `def` when the option is absent; a value
 *  that is no number or is below `min` is an error that names the option. */
export function numberOption(argv: string[], name: string, def: number, min: number): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v) || v < min) throw new Error(`--${name} needs a number >= ${min}, got '${argv[i + 1] ?? ''}'`);
  return v;
}
