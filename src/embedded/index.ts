/**
 * The embedded stack: starts Temporal, Redis and PostgreSQL for every service
 * whose URL the environment leaves unset, and nothing for those it sets. Each child
 * is supervised (./supervisor.ts): restarted with backoff when it dies, and the whole
 * stack stopped, with `onFatal` told why, when one of them is in a crash loop.
 */
import path from 'node:path';
import type { Config } from '../config';
import type { Logger } from '../log';
import { startEmbeddedPostgres } from './postgres';
import { startEmbeddedRedis } from './redis';
import { startEmbeddedTemporal } from './temporal';
import { ShutdownList } from '../shutdown';
import { superviseService, type CrashLoopError, type StartedService, type SupervisedService, type SupervisionPolicy } from './supervisor';

export interface StackEndpoints {
  temporalAddress: string;
  redisUrl: string;
  databaseUrl: string;
  temporalUiUrl?: string;
}

/** The embedded services by name, as started (absent when its URL was given). */
export type EmbeddedServiceName = 'postgres' | 'redis' | 'temporal';

export interface RunningStack extends StackEndpoints {
  /** The supervised children (a fault-injection run kills them; a test waits for their return). */
  services: Partial<Record<EmbeddedServiceName, SupervisedService>>;
  /** Restarts end now: called first on SIGINT/SIGTERM, whose Ctrl-C also reaches the children. */
  expectExit(): void;
  /** Stops every service this stack started, in reverse order. */
  stop(): Promise<void>;
}

export interface StackOptions {
  /** Where embedded services keep their data. */
  dataDir: string;
  ports: { temporal: number; temporalUi: number; redis: number; postgres: number };
  /** Throwaway mode for tests: in-memory Temporal, no AOF, no fsync, no Web UI. */
  ephemeral?: boolean;
  /** How children are restarted (config's EMBEDDED_CRASH_LOOP_* by default in npm start). */
  supervision?: Partial<SupervisionPolicy>;
  /**
   * Told once when a child is in a crash loop, after the stack has stopped: `npm start`
   * exits non-zero. Without it the stack still stops and the crash loop is logged.
   */
  onFatal?(err: CrashLoopError): void;
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
  const services: RunningStack['services'] = {};
  let fatal = false;
  const onCrashLoop = (err: CrashLoopError): void => {
    if (fatal) return;
    fatal = true;
    void stopAll().then(() => opts.onFatal?.(err));
  };
  /** Starts a service once, then hands it to its supervisor, which restarts it the same way. */
  const supervise = async <T extends StartedService>(name: EmbeddedServiceName, start: () => Promise<T>, restartNote?: string): Promise<T> => {
    const first = await start();
    const service = superviseService(name, first, start, { policy: opts.supervision, log, onCrashLoop, restartNote });
    services[name] = service;
    stops.push(() => service.stop());
    return first;
  };
  try {
    let databaseUrl = config.DATABASE_URL;
    if (!databaseUrl) {
      const pg = await supervise('postgres', () => startEmbeddedPostgres({ port: opts.ports.postgres, dir: path.join(opts.dataDir, 'postgres'), unsafeFast: opts.ephemeral }));
      databaseUrl = pg.url;
      log.info({ port: opts.ports.postgres }, 'embedded PostgreSQL started');
    }
    let redisUrl = config.REDIS_URL;
    if (!redisUrl) {
      const redis = await supervise('redis', () => startEmbeddedRedis({ port: opts.ports.redis, dir: path.join(opts.dataDir, 'redis'), appendOnly: !opts.ephemeral }),
        opts.ephemeral ? 'no AOF: the restarted Redis is empty; counters are warmed from the ledger again' : undefined);
      redisUrl = redis.url;
      log.info({ port: opts.ports.redis }, 'embedded Redis started');
    }
    let temporalAddress = config.TEMPORAL_ADDRESS;
    let temporalUiUrl: string | undefined;
    if (!temporalAddress) {
      // In memory (tests) a restart comes back empty: running workflows and Schedules are gone.
      // Their pending reservations are ended by the sweeper; the worker recreates its Schedules
      // only when it starts again. npm start and the chaos run keep a SQLite file, so a restart
      // resumes every workflow where it stopped.
      const temporal = await supervise('temporal', () => startEmbeddedTemporal({
        rootDir: config.rootDir,
        port: opts.ports.temporal,
        uiPort: opts.ports.temporalUi,
        namespace: config.TEMPORAL_NAMESPACE,
        dbFile: opts.ephemeral ? undefined : path.join(opts.dataDir, 'temporal', 'temporal.db'),
        headless: opts.ephemeral,
        fairness: config.EMBEDDED_TEMPORAL_FAIRNESS,
        // The embedded stack starts before the API, on the API's configured address.
        uiCodecEndpoint: codecEndpointUrl(config),
      }), opts.ephemeral ? 'in-memory Temporal restarts empty: running workflows and Schedules are lost (the sweeper ends their reservations)' : undefined);
      temporalAddress = temporal.address;
      temporalUiUrl = temporal.uiUrl;
      log.info({ address: temporal.address }, 'embedded Temporal dev server started');
    }
    const expectExit = (): void => Object.values(services).forEach((s) => s.expectExit());
    return { temporalAddress, redisUrl, databaseUrl, temporalUiUrl, services, expectExit, stop: () => { expectExit(); return stopAll(); } };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
