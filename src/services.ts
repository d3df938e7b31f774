/**
 * Starts the application roles on given endpoints: migrations, the Temporal
 * worker and the Express API. Used by `npm start` and by end-to-end tests.
 */
import type { Server } from 'node:http';
import { Connection } from '@temporalio/client';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from './config';
import type { Logger } from './log';
import type { StackEndpoints } from './stack';
import { createApiApp } from './api/app';
import { createDb } from './db/knex';
import { migrateLatest } from './db/migrate';
import { createRedis } from './redis/client';
import { createBillingWorker } from './worker/worker';

export interface RunningServices {
  urls: string[];
  apiUrl?: string;
  stop(): Promise<void>;
}

export async function startServices(
  config: Readonly<Config>,
  endpoints: StackEndpoints,
  roles: { api: boolean; worker: boolean },
  log: Logger,
): Promise<RunningServices> {
  const stops: Array<() => Promise<void>> = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch((err: unknown) => log.error({ err }, 'stop failed'));
  };
  const urls: string[] = [];
  let apiUrl: string | undefined;
  try {
    const db = createDb(endpoints.databaseUrl);
    stops.push(() => db.destroy());
    const applied = await migrateLatest(db);
    if (applied.length > 0) log.info({ applied }, 'migrations applied');

    const redis = createRedis(endpoints.redisUrl);
    stops.push(() => { redis.disconnect(); return Promise.resolve(); });
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });

    if (roles.worker) {
      const { worker, connection } = await createBillingWorker({ config, temporalAddress: endpoints.temporalAddress, activities: {} });
      const running = worker.run();
      stops.push(async () => {
        worker.shutdown();
        await running;
        await connection.close();
      });
      log.info({ taskQueue: config.TEMPORAL_TASK_QUEUE }, 'worker started');
    }

    if (roles.api) {
      const temporal = await Connection.connect({ address: endpoints.temporalAddress });
      stops.push(() => temporal.close());
      const app = createApiApp({ redis, db, temporal, registry });
      const server = await new Promise<Server>((resolve, reject) => {
        const s = app.listen(config.API_PORT, config.API_HOST, () => resolve(s));
        s.once('error', (err: NodeJS.ErrnoException) =>
          reject(err.code === 'EADDRINUSE' ? new Error(`port ${config.API_PORT} (API) is already in use: set API_PORT`) : err),
        );
      });
      stops.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
      apiUrl = `http://${config.API_HOST}:${config.API_PORT}`;
      urls.push(`API                 ${apiUrl}  (/v1/chat/completions, /admin, /readyz, /metrics)`);
    }
    return { urls, apiUrl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
