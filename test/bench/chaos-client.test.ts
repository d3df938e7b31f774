/**
 * The soak's client tells its own disconnect from a broken connection (issue 14): a client that
 * leaves a stream after N chunks is "client disconnected", a server that dies mid-stream is
 * "connection broke". CI once counted every planned disconnect as broken (the body's cancel
 * rejected after the abort), so the soak's disconnect invariant checked nothing. Over real HTTP.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSender, outcomeOf } from '../../bench/chaos/load';

const subject = { tenantId: 't', apiKeyId: 'k', key: 'sk-test', exercises: 'none' };
const chunk = (content: string): string => `data: ${JSON.stringify({ choices: [{ delta: { content } }] })}\n\n`;

describe('chaos client stream reading', () => {
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const timer = setInterval(() => {
        n += 1;
        if (req.url?.includes('die') && n === 3) { clearInterval(timer); res.destroy(); return; }
        if (n > 8) { clearInterval(timer); res.end('data: [DONE]\n\n'); return; }
        res.write(chunk(`w${n} `));
      }, 15);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const send = (path: string, disconnectAfterChunks?: number) => createSender(() => `${url}${path}`)
    .send({ kind: 'stream', body: { stream: true }, headers: {}, disconnectAfterChunks }, subject, 0);

  it('a planned disconnect after 2 chunks is the client\'s own, with the 2 chunks it read', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await send('/ok', 2);
      expect([outcomeOf(r), r.text, r.broken]).toEqual(['200 client disconnected', 'w1 w2 ', false]);
    }
  });

  it('a stream read to its end is complete', async () => {
    const r = await send('/ok');
    expect([outcomeOf(r), r.text]).toEqual(['200 completed', 'w1 w2 w3 w4 w5 w6 w7 w8 ']);
  });

  it('a server that dies mid-stream is a broken connection, not a disconnect', async () => {
    const r = await send('/die', 5);
    expect([outcomeOf(r), r.text]).toEqual(['200 connection broke', 'w1 w2 ']);
  });
});
