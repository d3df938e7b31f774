/**
 * The chat route's body parser (issue 8, item 2): the raw bytes, framed for sealing in place,
 * exactly as sent, with a Content-Length, chunked and compressed; express.json's answers for
 * the limit (413 at once when the declared length is over it), malformed JSON, charsets and
 * encodings, in the OpenAI error shape; the bytes are handed on once.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import express from 'express';
import { chatBodyParser, RawBodyTakenError, takeRawBody } from '../../src/api/chat-body';
import { errorMiddleware } from '../../src/api/errors';
import { FramedPlaintext } from '../../src/codec/body-cipher';
import { createLogger } from '../../src/log';

const LIMIT = 64 * 1024;

let server: http.Server;
let url: string;
beforeAll(async () => {
  const app = express();
  app.post('/chat', chatBodyParser({ limit: LIMIT }), (req, res) => {
    const raw = takeRawBody(req);
    const framed = raw?.take();
    let twice: string | undefined;
    try {
      raw?.take();
    } catch (err) {
      twice = err instanceof RawBodyTakenError ? 'refused' : 'other';
    }
    res.json({ body: req.body as unknown, raw: framed?.plaintext.toString('utf8'), sha256: raw?.sha256, framedLength: framed?.buffer.length, twice, again: takeRawBody(req) === undefined });
  });
  app.use(errorMiddleware(createLogger('silent', 'test')));
  server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/chat`;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** A raw HTTP POST, so headers (Content-Length, Transfer-Encoding) are exactly ours. */
function post(headers: Record<string, string>, chunks: Buffer[]): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

const json = 'application/json';
const body = Buffer.from('{ "model":"m",\n "messages":[{"role":"user","content":"h\\u00e9llo ✓"}] }', 'utf8');

describe('chatBodyParser', () => {
  it('keeps the exact bytes, framed with room for the iv and tag, with their SHA-256, taken once', async () => {
    const res = await post({ 'content-type': json, 'content-length': String(body.length) }, [body.subarray(0, 7), body.subarray(7)]);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({
      body: JSON.parse(body.toString('utf8')) as unknown,
      raw: body.toString('utf8'),
      framedLength: FramedPlaintext.start + body.length + 16,
      twice: 'refused',
      again: true,
    });
    expect(res.json['sha256']).toBe(createHash('sha256').update(body).digest('hex'));
  });

  it('reads a chunked body and a gzip, deflate or br one the same way', async () => {
    const chunked = await post({ 'content-type': json, 'transfer-encoding': 'chunked' }, [body.subarray(0, 5), body.subarray(5)]);
    expect(chunked.json['raw']).toBe(body.toString('utf8'));
    for (const [encoding, compressed] of [['gzip', zlib.gzipSync(body)], ['deflate', zlib.deflateSync(body)], ['br', zlib.brotliCompressSync(body)]] as const) {
      const res = await post({ 'content-type': json, 'content-encoding': encoding, 'content-length': String(compressed.length) }, [compressed]);
      expect(res.status).toBe(200);
      expect(res.json['raw']).toBe(body.toString('utf8'));
    }
  });

  it('answers 413 at once for a declared length over the limit, and for a chunked or inflated body that grows over it', async () => {
    // Only the headers are sent: the answer comes before any body byte, and the connection is closed.
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(url).port), '127.0.0.1', () => {
        socket.write(`POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${LIMIT + 1}\r\n\r\n`);
      });
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toMatch(/\r\nConnection: close\r\n/i);
    expect(answer).toContain('"code":"request_too_large"');
    const big = Buffer.from(`{"x":"${'a'.repeat(LIMIT)}"}`);
    const chunked = await post({ 'content-type': json, 'transfer-encoding': 'chunked' }, [big]);
    expect(chunked.status).toBe(413);
    const bomb = zlib.gzipSync(big);
    expect(bomb.length).toBeLessThan(LIMIT);
    const inflated = await post({ 'content-type': json, 'content-encoding': 'gzip', 'content-length': String(bomb.length) }, [bomb]);
    expect(inflated.status).toBe(413);
    // Exactly at the limit passes.
    const atLimit = Buffer.from(`{"x":"${'a'.repeat(LIMIT - 8)}"}`);
    expect(atLimit.length).toBe(LIMIT);
    expect((await post({ 'content-type': json, 'content-length': String(atLimit.length) }, [atLimit])).status).toBe(200);
  });

  it('answers malformed JSON 400, a foreign charset or encoding 415; an empty body is {}; a BOM is stripped', async () => {
    const bad = Buffer.from('{"model": "m", "messages": [');
    const malformed = await post({ 'content-type': json, 'content-length': String(bad.length) }, [bad]);
    expect(malformed.status).toBe(400);
    expect(malformed.json).toEqual({ error: expect.objectContaining({ code: 'invalid_request_error', message: 'Malformed JSON in request body.' }) });
    expect((await post({ 'content-type': `${json}; charset=latin1`, 'content-length': String(body.length) }, [body])).status).toBe(415);
    expect((await post({ 'content-type': `${json}; charset=utf-8`, 'content-length': String(body.length) }, [body])).status).toBe(200);
    expect((await post({ 'content-type': json, 'content-encoding': 'compress', 'content-length': String(body.length) }, [body])).status).toBe(415);
    expect((await post({ 'content-type': json, 'content-length': '0' }, [])).json['body']).toEqual({});
    const withBom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), body]);
    const bom = await post({ 'content-type': json, 'content-length': String(withBom.length) }, [withBom]);
    expect(bom.json['body']).toEqual(JSON.parse(body.toString('utf8')));
    // The stored bytes are what the client sent, BOM included.
    expect(Buffer.from(bom.json['raw'] as string, 'utf8').subarray(0, 3)).toEqual(Buffer.from('\ufeff', 'utf8'));
  });

  it('leaves a body that is not JSON unparsed, as express.json does', async () => {
    const res = await post({ 'content-type': 'text/plain', 'content-length': String(body.length) }, [body]);
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ again: true });
  });
});
