// Text from the peer made fit to quote: a module of its own so that wire.ts
// and its block list (wire-blocks.ts) share it without importing each other.

/** `text` from the peer made fit to quote in a message an operator reads: control characters (a line
 *  break, a terminal's escape) as \xNN, so that they neither break HMP's lines nor reach a terminal */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
