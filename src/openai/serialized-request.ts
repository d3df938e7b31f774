/**
 * The upstream request built from the stored body's bytes (src/activities/upstream-call-step.ts):
 * the client's top-level members as they were sent, minus the ones the gateway owns (`stream`,
 * `stream_options`, `max_tokens`, `max_completion_tokens`), plus the gateway's output cap under
 * the client's name for it: the same request `upstreamBody()` (./chat-request.ts) builds from the
 * parsed body, without parsing the body into objects or serialising it again. The provider adds
 * its stream members and sends the pieces as they are, with their total length
 * (src/upstream/openai-compatible.ts): the body is never copied into one more buffer.
 *
 * A body with a repeated top-level member is not spliced: JSON parsers disagree on which
 * occurrence wins, and the upstream must run the model the API priced (JSON.parse: the last).
 * `serializedUpstreamRequest` then answers undefined and the caller serialises the parsed body.
 */
import { jsonObjectMembers } from './json-members';

/** Top-level members the gateway sets itself. */
const GATEWAY_MEMBERS = new Set(['stream', 'stream_options', 'max_tokens', 'max_completion_tokens']);

/** A chat request as JSON pieces: `{`, the members, `}` are added when it is sent. */
export class SerializedChatRequest {
  /** Each a complete `"name":value` member. */
  readonly members: readonly Buffer[];

  constructor(members: readonly Buffer[]) {
    this.members = members;
  }

  /** The body's pieces with `extra` members appended (the provider's stream settings), and its length in bytes. */
  body(extra: Readonly<Record<string, unknown>>): { pieces: Buffer[]; length: number } {
    const added = Object.entries(extra).map(([name, value]) => Buffer.from(`${JSON.stringify(name)}:${JSON.stringify(value)}`, 'utf8'));
    const members = [...this.members, ...added];
    const pieces: Buffer[] = [Buffer.from('{')];
    members.forEach((m, i) => pieces.push(...(i === 0 ? [m] : [Buffer.from(','), m])));
    pieces.push(Buffer.from('}'));
    return { pieces, length: pieces.reduce((n, p) => n + p.length, 0) };
  }
}

/** The upstream request for a stored body (pieces of `stored`, not copies); undefined when it cannot be spliced safely. */
export function serializedUpstreamRequest(stored: Buffer, maxOutputTokens: number): SerializedChatRequest | undefined {
  const members = jsonObjectMembers(stored);
  if (!members) return undefined;
  const names = new Set(members.map((m) => m.name));
  if (names.size !== members.length) return undefined;
  const kept = members.filter((m) => !GATEWAY_MEMBERS.has(m.name)).map((m) => stored.subarray(m.start, m.end));
  const capName = names.has('max_completion_tokens') ? 'max_completion_tokens' : 'max_tokens';
  kept.push(Buffer.from(`"${capName}":${maxOutputTokens}`, 'utf8'));
  return new SerializedChatRequest(kept);
}

/**
 * The same splice for any endpoint (issue 11): `stored`'s top-level members minus `dropped`
 * (the ones the gateway sets), plus `added`. Undefined when a member repeats (see above).
 */
export function splicedUpstreamRequest(stored: Buffer, dropped: ReadonlySet<string>, added: Readonly<Record<string, unknown>>): SerializedChatRequest | undefined {
  const members = jsonObjectMembers(stored);
  if (!members) return undefined;
  const names = new Set(members.map((m) => m.name));
  if (names.size !== members.length) return undefined;
  const kept = members.filter((m) => !dropped.has(m.name) && !Object.hasOwn(added, m.name)).map((m) => stored.subarray(m.start, m.end));
  for (const [name, value] of Object.entries(added)) kept.push(Buffer.from(`${JSON.stringify(name)}:${JSON.stringify(value)}`, 'utf8'));
  return new SerializedChatRequest(kept);
}
