// QAPI-style checking of nested QMP arguments (lists of structs, enums) with
// the texts of QEMU's qobject-input-visitor: "Parameter 'capabilities[0].state'
// is missing", "Invalid parameter type for 'x', expected: boolean",
// "Parameter 'capability' does not accept value 'foo'", "Parameter 'x.y' is
// unexpected". The registry checks a command's top-level members; handlers
// use this for what lies below them.

import { CommandError } from '../errors.js';

export type QapiType =
  | 'str' | 'bool' | 'int' | 'number' | 'any'
  | { enum: readonly string[] }
  | { list: QapiType }
  | { struct: QapiMembers };

/** Members in declaration order; a name starting with '*' is optional (QAPI's spelling). */
export type QapiMembers = Record<string, QapiType>;

function typeName(t: QapiType): string {
  if (typeof t === 'string') {
    switch (t) {
      case 'str': return 'string';
      case 'bool': return 'boolean';
      case 'int': return 'integer';
      case 'number': return 'number';
      default: return 'any';
    }
  }
  if ('enum' in t) return 'string';
  if ('list' in t) return 'array';
  return 'object';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks `value` against `type`; `path` is the full name used in messages,
 *  `name` the member's own name (QEMU names enums by it alone). */
export function checkQapi(type: QapiType, value: unknown, path: string, name: string = path): void {
  const wrongType = (): never => {
    throw new CommandError(`Invalid parameter type for '${path}', expected: ${typeName(type)}`);
  };
  if (typeof type === 'string') {
    switch (type) {
      case 'str': if (typeof value !== 'string') wrongType(); return;
      case 'bool': if (typeof value !== 'boolean') wrongType(); return;
      case 'int': if (typeof value !== 'number' || !Number.isInteger(value)) wrongType(); return;
      case 'number': if (typeof value !== 'number') wrongType(); return;
      default: return;
    }
  }
  if ('enum' in type) {
    if (typeof value !== 'string') wrongType();
    if (!type.enum.includes(value as string)) {
      throw new CommandError(`Parameter '${name}' does not accept value '${value as string}'`);
    }
    return;
  }
  if ('list' in type) {
    if (!Array.isArray(value)) wrongType();
    (value as unknown[]).forEach((el, i) => checkQapi(type.list, el, `${path}[${i}]`, name));
    return;
  }
  if (!isObject(value)) wrongType();
  checkMembers(type.struct, value as Record<string, unknown>, path);
}

/** Checks a struct's members: declared ones in order (missing, then type),
 *  then anything undeclared. `prefix` is '' at the top level. */
export function checkMembers(members: QapiMembers, value: Record<string, unknown>, prefix = ''): void {
  const full = (n: string): string => (prefix === '' ? n : `${prefix}.${n}`);
  const declared = new Set<string>();
  for (const [key, type] of Object.entries(members)) {
    const optional = key.startsWith('*');
    const n = optional ? key.slice(1) : key;
    declared.add(n);
    if (!(n in value) || value[n] === undefined) {
      if (!optional) throw new CommandError(`Parameter '${full(n)}' is missing`);
      continue;
    }
    checkQapi(type, value[n], full(n), n);
  }
  for (const k of Object.keys(value)) {
    if (!declared.has(k)) throw new CommandError(`Parameter '${full(k)}' is unexpected`);
  }
}
