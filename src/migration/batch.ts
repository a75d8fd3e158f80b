// Placeholder: the module that owns this subcommand replaces this file.
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('postcopy: not built yet\n');
  return 1;
}
