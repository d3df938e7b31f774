/**
 * `npm run bench:lock` (M11: lock acquisition < 10 ms): the conversation lock on an embedded
 * Redis. Uncontended: acquire + release of a fresh conversation, one at a time. Contended: 10
 * clients taking turns on one conversation, each holding it 2 ms; the wait then includes the
 * holders before it. 100 contenders: 100 clients all asking for one conversation at once,
 * each holding it 1 ms (issue 10's figure: the last one waits behind 99 holders). Prints P50/P99 of the acquisition (the lock's own wait histogram's view).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { freePort } from '../src/embedded/child';
import { startEmbeddedRedis } from '../src/embedded/redis';
import { createDistributedLock } from '../src/locks/distributed-lock';
import { createLogger } from '../src/log';
import { createLockMetrics } from '../src/metrics';
import { createRedis, duplicateRedis } from '../src/redis/client';
import { createScriptRunner } from '../src/redis/script-runner';
import { percentile } from './gateway/statistics';
import { printTable } from './lib/table';


async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-lock-'));
  const server = await startEmbeddedRedis({ port: await freePort(), dir, appendOnly: false });
  const redis = createRedis(server.url, { lazyConnect: true });
  try {
    await redis.connect();
    const registry = new Registry();
    const locks = createDistributedLock({ redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: createLogger('warn', 'bench') });
    const rows: string[][] = [];

    const uncontended: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const start = performance.now();
      const held = await locks.acquire(`bench-${i}`);
      uncontended.push(performance.now() - start);
      await held.release();
    }
    uncontended.sort((a, b) => a - b);
    rows.push(['uncontended acquire', String(uncontended.length), percentile(uncontended, 50).toFixed(3), percentile(uncontended, 99).toFixed(3)]);

    const contended: number[] = [];
    await Promise.all(Array.from({ length: 10 }, async () => {
      for (let i = 0; i < 30; i++) {
        const start = performance.now();
        await locks.withLock('bench-shared', async () => {
          contended.push(performance.now() - start);
          await new Promise((r) => setTimeout(r, 2));
        });
      }
    }));
    contended.sort((a, b) => a - b);
    rows.push(['10 clients, one conversation, 2 ms holds', String(contended.length), percentile(contended, 50).toFixed(3), percentile(contended, 99).toFixed(3)]);

    // 100 contenders at once, 3 rounds each: each round all 100 ask together for one conversation.
    // Handoff: the round's wall time minus the time the lock was really held, per acquisition: what
    // the waiters' polling adds (a perfect handoff would make it ~0; the holds alone set the floor of the wait).
    // Measured twice: waiters that only poll, and waiters woken on release (a subscriber connection).
    const subscriber = duplicateRedis(redis);
    const woken = createDistributedLock({ redis, subscriber, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: createLogger('warn', 'bench') });
    const handoffs: string[] = [];
    for (const [label, lockSet] of [['polling', locks], ['wake-up on release', woken]] as const) {
      const hundred: number[] = [];
      let handoffMs = 0;
      for (let round = 0; round < 3; round++) {
        let heldMs = 0;
        const roundStart = performance.now();
        await Promise.all(Array.from({ length: 100 }, async () => {
          const start = performance.now();
          await lockSet.withLock(`bench-hundred-${label}-${round}`, async () => {
            const got = performance.now();
            hundred.push(got - start);
            await new Promise((r) => setTimeout(r, 1));
            heldMs += performance.now() - got;
          }, { waitMs: 60_000 });
        }));
        handoffMs += (performance.now() - roundStart - heldMs) / 100;
      }
      hundred.sort((a, b) => a - b);
      rows.push([`100 contenders, one conversation, 1 ms holds (${label})`, String(hundred.length), percentile(hundred, 50).toFixed(3), percentile(hundred, 99).toFixed(3)]);
      handoffs.push(`${label}: ${(handoffMs / 3).toFixed(2)} ms`);
    }
    subscriber.disconnect();

    printTable(['case', 'acquisitions', 'P50 ms', 'P99 ms'], rows);
    console.log(`\n100 contenders, time from one holder's release to the next holder's start (average): ${handoffs.join('; ')}.`);
    console.log(`\nnode ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}); Redis embedded, no AOF.`);
  } finally {
    redis.disconnect();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
