/**
 * The embedded stack: starts Temporal, Redis and PostgreSQL for every service
 * whose URL the environment leaves unset, and nothing for those it sets.
 */
import path from 'node:path';
import type { Config } from '../config';
import type { Logger } from '../log';
import { startEmbeddedPostgres } from './postgres';
import { startEmbeddedRedis } from './redis';
import { startEmbeddedTemporal } from './temporal';
import { ShutdownList } from '../shutdown';

export interface StackEndpoints {
  temporalAddress: string;
  redisUrl: string;
  databaseUrl: string;
  temporalUiUrl?: string;
}

export interface RunningStack extends StackEndpoints {
  /** Stops every service this stack started, in reverse order. */
  stop(): Promise<void>;
}

export interface StackOptions {
  /** Where embedded services keep their data. */
  dataDir: string;
  ports: { temporal: number; temporalUi: number; redis: number; postgres: number };
  /** Throwaway mode for tests: in-memory Temporal, no AOF, no fsync, no Web UI. */
  ephemeral?: boolean;
}

/**
 * The API's codec server as the browser reaches it (the Web UI calls it from the page):
 * a wildcard API_HOST is reached on loopback.
 */
export function codecEndpointUrl(config: Readonly<Pick<Config, 'API_HOST' | 'API_PORT'>>): string {
  const host = config.API_HOST === '0.0.0.0' || config.API_HOST === '::' ? '127.0.0.1' : config.API_HOST;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.API_PORT}/codec`;
}

export async function startStack(config: Readonly<Config>, opts: StackOptions, log: Logger): Promise<RunningStack> {
  const stops = new ShutdownList(log);
  const stopAll = (): Promise<void> => stops.stopAll();
  try {
    let databaseUrl = config.DATABASE_URL;
    if (!databaseUrl) {
      const pg = await startEmbeddedPostgres({ port: opts.ports.postgres, dir: path.join(opts.dataDir, 'postgres'), unsafeFast: opts.ephemeral });
      stops.push(pg.stop);
      databaseUrl = pg.url;
      log.info({ port: opts.ports.postgres }, 'embedded PostgreSQL started');
    }
    let redisUrl = config.REDIS_URL;
    if (!redisUrl) {
      const redis = await startEmbeddedRedis({ port: opts.ports.redis, dir: path.join(opts.dataDir, 'redis'), appendOnly: !opts.ephemeral });
      stops.push(redis.stop);
      redisUrl = redis.url;
      log.info({ port: opts.ports.redis }, 'embedded Redis started');
    }
    let temporalAddress = config.TEMPORAL_ADDRESS;
    let temporalUiUrl: string | undefined;
    if (!temporalAddress) {
      const temporal = await startEmbeddedTemporal({
        rootDir: config.rootDir,
        port: opts.ports.temporal,
        uiPort: opts.ports.temporalUi,
        namespace: config.TEMPORAL_NAMESPACE,
        dbFile: opts.ephemeral ? undefined : path.join(opts.dataDir, 'temporal', 'temporal.db'),
        headless: opts.ephemeral,
        fairness: config.EMBEDDED_TEMPORAL_FAIRNESS,
        // The embedded stack starts before the API, on the API's configured address.
        uiCodecEndpoint: codecEndpointUrl(config),
      });
      stops.push(temporal.stop);
      temporalAddress = temporal.address;
      temporalUiUrl = temporal.uiUrl;
      log.info({ address: temporal.address }, 'embedded Temporal dev server started');
    }
    return { temporalAddress, redisUrl, databaseUrl, temporalUiUrl, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
