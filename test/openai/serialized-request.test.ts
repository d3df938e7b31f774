/**
 * The upstream request spliced from the stored body's bytes (issue 8, item 2): the same request
 * as `upstreamBody()` of the parsed body for every shape of body, pieces of the stored buffer
 * (no copies), and no splice where parsers could disagree (a repeated top-level member).
 */
import { upstreamBody, type ChatCompletionRequest } from '../../src/openai/chat-request';
import { jsonObjectMembers } from '../../src/openai/json-members';
import { SerializedChatRequest, serializedUpstreamRequest } from '../../src/openai/serialized-request';

const joined = (req: SerializedChatRequest, extra: Record<string, unknown> = {}): { text: string; length: number } => {
  const { pieces, length } = req.body(extra);
  return { text: Buffer.concat(pieces).toString('utf8'), length };
};

const BODIES: readonly string[] = [
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
  '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"stream":true,"stream_options":{"include_usage":false},"temperature":0.2}',
  '{"model":"m","max_completion_tokens":null,"messages":[{"role":"user","content":"hi"}]}',
  ' \n{ "messages" : [ { "role" : "user" , "content" : [ {"type":"text","text":"a \\"quoted\\" } ] { word"} ] } ] ,\t"model":"m" , "n" : 2 ,"stop":["}","]"], "logit_bias":{"50256":-100},"user":"é✓\\ud83d\\ude00","seed":-1.5e3,"x":true,"y":false,"z":null } \n',
  '{"model":"m","messages":[{"role":"user","content":"hi"}],"\\u0073tream":true,"max_tokens":5}',
  '{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"array","items":{}}}}}}]}',
];

describe('serializedUpstreamRequest', () => {
  it.each(BODIES.map((b) => [b]))('builds what upstreamBody builds from the parsed body: %s', (text) => {
    const stored = Buffer.from(text, 'utf8');
    for (const cap of [1, 4096]) {
      const spliced = serializedUpstreamRequest(stored, cap);
      expect(spliced).toBeInstanceOf(SerializedChatRequest);
      const { text: out, length } = joined(spliced!);
      expect(JSON.parse(out)).toEqual(upstreamBody(JSON.parse(text) as ChatCompletionRequest, cap));
      expect(length).toBe(Buffer.byteLength(out));
      // Member order is the client's, the cap last: as upstreamBody's spread builds it.
      expect(Object.keys(JSON.parse(out) as object)).toEqual(Object.keys(upstreamBody(JSON.parse(text) as ChatCompletionRequest, cap)));
    }
  });

  it('appends the provider\'s members and shares the stored bytes instead of copying them', () => {
    const stored = Buffer.from('{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}');
    const spliced = serializedUpstreamRequest(stored, 7)!;
    expect(JSON.parse(joined(spliced, { stream: true, stream_options: { include_usage: true } }).text)).toEqual({
      model: 'm', messages: [{ role: 'user', content: 'hi' }], max_tokens: 7, stream: true, stream_options: { include_usage: true },
    });
    // The members are views of the stored buffer: writing into it shows through.
    stored[stored.indexOf('hi')] = 'H'.charCodeAt(0);
    expect(joined(spliced).text).toContain('"Hi"');
  });

  it('does not splice a body with a repeated top-level member, or anything but one object', () => {
    expect(serializedUpstreamRequest(Buffer.from('{"model":"cheap","messages":[],"model":"dear"}'), 5)).toBeUndefined();
    expect(serializedUpstreamRequest(Buffer.from('{"model":"m","\\u006dodel":"n"}'), 5)).toBeUndefined();
    for (const text of ['[1,2]', '"x"', '{"a":1} {"b":2}', '{"a":1', '{"a" 1}', '{a:1}', '{"a":"unterminated}', '']) {
      expect(serializedUpstreamRequest(Buffer.from(text), 5)).toBeUndefined();
    }
  });
});

describe('jsonObjectMembers', () => {
  it('finds every member of random nested objects exactly where JSON.parse reads them', () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const value = (depth: number): unknown => {
      switch (depth > 3 ? rand(4) : rand(7)) {
        case 0: return rand(1000) - 500;
        case 1: return ['plain', 'with "quotes"', 'back\\slash', 'braces {[]}', 'ünï ✓', '\n\t'][rand(6)];
        case 2: return [true, false, null][rand(3)];
        case 3: return rand(100) / 7;
        case 4: return Array.from({ length: rand(4) }, () => value(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rand(4) }, (_, i) => [`k${i}${['', '"', '}'][rand(3)]}`, value(depth + 1)]));
      }
    };
    for (let i = 0; i < 200; i++) {
      const object = Object.fromEntries(Array.from({ length: 1 + rand(6) }, (_, k) => [`m${k}`, value(0)]));
      const text = JSON.stringify(object, null, rand(2) === 0 ? undefined : 2);
      const buf = Buffer.from(text, 'utf8');
      const members = jsonObjectMembers(buf)!;
      expect(members.map((m) => m.name)).toEqual(Object.keys(object));
      for (const m of members) expect(JSON.parse(`{${buf.toString('utf8', m.start, m.end)}}`)).toEqual({ [m.name]: object[m.name] });
    }
  });
});
