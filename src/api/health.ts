/** Liveness, readiness (Redis, PostgreSQL, Temporal) and the Prometheus scrape endpoint. */
import { Router } from 'express';
import type { Connection } from '@temporalio/client';
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { Registry } from 'prom-client';

export interface HealthDeps {
  redis: Pick<Redis, 'ping'>;
  db: Pick<Knex, 'raw'>;
  temporal: Pick<Connection, 'healthService'>;
  registry: Registry;
}

/** Resolves to 'ok', or to why the dependency is not reachable. */
async function probe(check: () => Promise<unknown>, timeoutMs = 1000): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([check(), timeout]);
    return 'ok';
  } catch (err) {
    return err instanceof Error ? err.message : 'unreachable';
  } finally {
    clearTimeout(timer);
  }
}

export function healthRouter(deps: HealthDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const [redis, postgres, temporal] = await Promise.all([
      probe(() => deps.redis.ping()),
      probe(() => deps.db.raw('select 1')),
      probe(() => deps.temporal.healthService.check({})),
    ]);
    const checks = { redis, postgres, temporal };
    // Redis down is degraded, not unready: admission falls back to PostgreSQL (M2.3).
    const ready = postgres === 'ok' && temporal === 'ok';
    res.status(ready ? 200 : 503).json({ status: ready ? (redis === 'ok' ? 'ready' : 'degraded') : 'unready', checks });
  });
  router.get('/metrics', async (_req, res) => {
    res.type(deps.registry.contentType).send(await deps.registry.metrics());
  });
  return router;
}
