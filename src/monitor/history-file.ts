// The interactive console's history file (~/.postcopy_history, or
// POSTCOPY_HISTORY): what was typed in earlier runs, for the Up arrow, kept
// oldest first, bounded, and never a reason for the console to fail.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** History entries kept in the history file. */
export const HISTORY_SIZE = 1000;

/** Reads a history file (oldest first) into readline's order (newest first). */
export function loadHistory(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').slice(-HISTORY_SIZE).reverse();
  } catch {
    return [];
  }
}

/** Writes readline's history (newest first) to the file, oldest first, bounded. */
export function saveHistory(file: string, newestFirst: readonly string[]): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    // completion leaves a space after the last word: not worth keeping
    const lines = newestFirst.slice(0, HISTORY_SIZE).map((l) => l.trimEnd()).reverse();
    writeFileSync(file, lines.length ? `${lines.join('\n')}\n` : '', { mode: 0o600 });
  } catch {
    // history is a convenience: an unwritable file must not break the console
  }
}
