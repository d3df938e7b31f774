/**
 * `npm run bench:bodies` (issue 8, item 5): what the body store and the payload codec add
 * to one request, at 1 KB, 100 KB and 10 MB bodies.
 *
 * - store: put + get + delete of one body in request_body (AES-256-GCM with the codec
 *   keyring, a round trip each) against a real embedded PostgreSQL (fsync on);
 * - codec: encode + decode of one Temporal payload of that size (AesGcmPayloadCodec).
 *
 * Wall time per op (P50/P99) and this process's CPU per op (user + system; the PostgreSQL
 * server's own CPU is not counted).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { defaultPayloadConverter } from '@temporalio/common';
import { developmentKeyring } from '../src/codec/keyring';
import { AesGcmPayloadCodec } from '../src/codec/payload-codec';
import { createRequestBodyRepository } from '../src/db/request-body-repository';
import { withDatastores } from './lib/datastores';
import { percentile } from './gateway/statistics';
import { printTable } from './lib/table';

const SIZES: ReadonlyArray<{ label: string; bytes: number; iterations: number }> = [
  { label: '1 KB', bytes: 1024, iterations: 400 },
  { label: '100 KB', bytes: 100 * 1024, iterations: 200 },
  { label: '10 MB', bytes: 10 * 1024 * 1024, iterations: 20 },
];

interface Sample { wallMs: number[]; cpuMs: number }

async function measure(iterations: number, op: () => Promise<void>): Promise<Sample> {
  for (let i = 0; i < Math.min(5, iterations); i++) await op(); // warm-up
  const wallMs: number[] = [];
  const cpu = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    const start = performance.now();
    await op();
    wallMs.push(performance.now() - start);
  }
  const used = process.cpuUsage(cpu);
  return { wallMs, cpuMs: (used.user + used.system) / 1000 / iterations };
}

/** Nearest-rank percentile of unsorted samples (the gateway benchmark's rule). */
const percentileOf = (values: number[], p: number): number => percentile([...values].sort((a, b) => a - b), p);

/** A chat request body of about `bytes` bytes (one user message of base64 text). */
function bodyOf(bytes: number): Buffer {
  const head = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"';
  const tail = '"}]}';
  const filler = randomBytes(Math.ceil((bytes * 3) / 4)).toString('base64').slice(0, Math.max(0, bytes - head.length - tail.length));
  return Buffer.from(head + filler + tail, 'utf8');
}

async function main(): Promise<void> {
  await withDatastores('bodies', {}, async ({ db }) => {
    const keyring = developmentKeyring();
    const store = createRequestBodyRepository(db, keyring);
    const codec = new AesGcmPayloadCodec(keyring);
    const rows: string[][] = [];
    for (const size of SIZES) {
      const body = bodyOf(size.bytes);
      const storeSample = await measure(size.iterations, async () => {
        const requestId = `bench_${randomUUID()}`;
        await store.put({ requestId, tenantId: 'bench', kind: 'request', body });
        const back = await store.get(requestId, 'request');
        if (back?.length !== body.length) throw new Error('body store returned another body');
        await store.delete(requestId, 'request');
      });
      const payload = defaultPayloadConverter.toPayload(JSON.parse(body.toString('utf8')) as unknown);
      const codecSample = await measure(size.iterations, async () => {
        const [decoded] = await codec.decode(await codec.encode([payload]));
        if (decoded?.data?.length !== payload.data?.length) throw new Error('codec returned another payload');
      });
      for (const [what, s] of [['store put+get+delete', storeSample], ['codec encode+decode', codecSample]] as const) {
        rows.push([size.label, what, percentileOf(s.wallMs, 50).toFixed(2), percentileOf(s.wallMs, 99).toFixed(2), s.cpuMs.toFixed(2), String(size.iterations)]);
      }
    }
    printTable(['body', 'operation', 'P50 ms', 'P99 ms', 'CPU ms/op', 'n'], rows);
    console.log(`\nnode ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}); PostgreSQL embedded, fsync on; CPU = this process only.`);
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
