/**
 * The top-level members of a JSON object as spans of its bytes, so the upstream request can
 * be built from the stored body without parsing it into objects and serialising it again
 * (a 32 MiB body would otherwise exist four times over in the worker: bytes, text, objects,
 * re-serialised text). Used only on bodies the API has already parsed successfully, but it
 * never trusts that: anything that is not one well-formed object is `undefined`, and the
 * caller takes the parse-and-serialise path instead.
 *
 * Only the structure is walked: strings are skipped escape by escape and nested values by
 * depth, without building them. Member names are decoded (`JSON.parse` of the small name
 * span), so `"\u0073tream"` is the member `stream`, as a JSON parser reads it.
 */

export interface JsonMember {
  /** The decoded member name. */
  name: string;
  /** `"name": value`, from the opening quote of the name to the end of the value. */
  start: number;
  end: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;

const isSpace = (b: number | undefined): boolean => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;

function skipSpace(buf: Buffer, at: number): number {
  while (isSpace(buf[at])) at += 1;
  return at;
}

/** The index just past the string starting at `at` (a quote), or -1. */
function skipString(buf: Buffer, at: number): number {
  if (buf[at] !== QUOTE) return -1;
  for (let i = at + 1; i < buf.length; i += 1) {
    const b = buf[i]!;
    if (b === BACKSLASH) i += 1;
    else if (b === QUOTE) return i + 1;
    else if (b < 0x20) return -1; // raw control characters are not allowed in JSON strings
  }
  return -1;
}

/** The index just past the value starting at `at`, or -1. Nested values are skipped by depth. */
function skipValue(buf: Buffer, at: number): number {
  const first = buf[at];
  if (first === QUOTE) return skipString(buf, at);
  if (first === 0x7b || first === 0x5b) {
    let depth = 0;
    for (let i = at; i < buf.length; i += 1) {
      const b = buf[i]!;
      if (b === QUOTE) {
        const next = skipString(buf, i);
        if (next < 0) return -1;
        i = next - 1;
      } else if (b === 0x7b || b === 0x5b) depth += 1;
      else if (b === 0x7d || b === 0x5d) {
        depth -= 1;
        if (depth === 0) return i + 1;
      }
    }
    return -1;
  }
  // A number or a literal: up to the next delimiter.
  let i = at;
  while (i < buf.length && !isSpace(buf[i]) && buf[i] !== COMMA && buf[i] !== 0x7d && buf[i] !== 0x5d) i += 1;
  return i > at ? i : -1;
}

/** The members of the object `buf` holds (whitespace around it allowed), in order; undefined when it is not one object. */
export function jsonObjectMembers(buf: Buffer): JsonMember[] | undefined {
  let at = skipSpace(buf, 0);
  if (buf[at] !== 0x7b) return undefined;
  at = skipSpace(buf, at + 1);
  const members: JsonMember[] = [];
  if (buf[at] === 0x7d) return skipSpace(buf, at + 1) === buf.length ? members : undefined;
  for (;;) {
    const start = at;
    const nameEnd = skipString(buf, at);
    if (nameEnd < 0) return undefined;
    let name: unknown;
    try {
      name = JSON.parse(buf.toString('utf8', start, nameEnd));
    } catch {
      return undefined;
    }
    at = skipSpace(buf, nameEnd);
    if (buf[at] !== COLON) return undefined;
    at = skipSpace(buf, at + 1);
    const end = skipValue(buf, at);
    if (end < 0 || typeof name !== 'string') return undefined;
    members.push({ name, start, end });
    at = skipSpace(buf, end);
    if (buf[at] === COMMA) {
      at = skipSpace(buf, at + 1);
      continue;
    }
    if (buf[at] === 0x7d) return skipSpace(buf, at + 1) === buf.length ? members : undefined;
    return undefined;
  }
}
