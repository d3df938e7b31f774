/**
 * `npm run bench:routing` (issue 10: routing overhead per request): RoutingStep's work,
 * ChannelRouter.route(), on an embedded PostgreSQL and Redis with 4 channels of one model.
 * Cases: no conversation (one MGET of the channels' cool-downs), with a conversation
 * (plus one GET of its affinity), and the channel list read from PostgreSQL on every route
 * (cache off: what a route costs once a second when the 1 s cache expires). Plus the
 * affinity update after a success (one GET + one SET), which UpstreamCallStep pays.
 * Prints P50/P99 per route.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { createChannelRepository } from '../src/channels/channel-repository';
import { createChannelHealth } from '../src/channels/channel-health';
import { createChannelRouter } from '../src/channels/channel-router';
import { developmentKeyring } from '../src/codec/keyring';
import { createAffinityStore } from '../src/routing/affinity-store';
import { createOpenAICompatibleProvider } from '../src/upstream/openai-compatible';
import { withDatastores } from './lib/datastores';
import { percentile } from './gateway/statistics';
import { printTable } from './lib/table';

const ROUTES = 3000;

async function main(): Promise<void> {
  await withDatastores('routing', { redis: { appendOnly: false } }, async ({ db, redis }) => {
    const channels = createChannelRepository(db, developmentKeyring());
    for (let i = 0; i < 4; i++) {
      await channels.put({ id: `ch-${i}`, baseUrl: `http://127.0.0.1:${9000 + i}/v1`, apiKey: `sk-bench-${i}`, models: ['bench-model'], weight: i + 1, enabled: true });
    }
    const make = (cacheMs: number) => createChannelRouter({
      channels,
      health: createChannelHealth(redis!),
      affinity: createAffinityStore(redis!),
      defaultProvider: createOpenAICompatibleProvider({ baseUrl: 'http://127.0.0.1:1/v1' }),
      cacheMs,
    });
    const cached = make(1000);
    const uncached = make(0);
    const rows: string[][] = [];
    const measure = async (name: string, fn: (i: number) => Promise<unknown>): Promise<void> => {
      for (let i = 0; i < 200; i++) await fn(i); // warm-up
      const times: number[] = [];
      for (let i = 0; i < ROUTES; i++) {
        const start = performance.now();
        await fn(i);
        times.push(performance.now() - start);
      }
      times.sort((a, b) => a - b);
      rows.push([name, String(times.length), percentile(times, 50).toFixed(3), percentile(times, 99).toFixed(3)]);
    };
    await measure('route, no conversation (list cached)', () => cached.route({ model: 'bench-model' }));
    await measure('route, with a conversation (list cached)', (i) => cached.route({ model: 'bench-model', conversationId: `conv-${i % 100}` }));
    await measure('route, list read from PostgreSQL every time', () => uncached.route({ model: 'bench-model' }));
    await measure('affinity update after a success', (i) => cached.recordSuccess(`conv-${i % 100}`, [], 'ch-1'));
    printTable(['case', 'routes', 'P50 ms', 'P99 ms'], rows);
    console.log(`\nnode ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}); embedded PostgreSQL and Redis (no AOF), 4 channels.`);
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
