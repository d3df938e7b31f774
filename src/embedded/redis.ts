/** Embedded Redis: a `redis-server` child with AOF on, data under the data directory. */
import fs from 'node:fs';
import { assertPortFree, spawnService, waitUntilReady, canConnect, type ServiceProcess } from './child';

export interface EmbeddedRedisOptions {
  port: number;
  dir: string;
  /** AOF persistence (on for `npm start`; tests may turn it off for speed). */
  appendOnly?: boolean;
}

export interface EmbeddedRedis {
  url: string;
  process: ServiceProcess;
  stop(): Promise<void>;
}

export async function startEmbeddedRedis(opts: EmbeddedRedisOptions): Promise<EmbeddedRedis> {
  await assertPortFree(opts.port, 'Redis');
  fs.mkdirSync(opts.dir, { recursive: true });
  const args = [
    '--port', String(opts.port),
    '--bind', '127.0.0.1',
    '--dir', opts.dir,
    '--appendonly', opts.appendOnly === false ? 'no' : 'yes',
    '--appendfsync', 'everysec',
    '--save', '',
    '--daemonize', 'no',
    '--protected-mode', 'yes',
    '--loglevel', 'warning',
  ];
  const proc = spawnService('redis', 'redis-server', args);
  await waitUntilReady(proc, () => canConnect(opts.port), 15_000);
  return {
    url: `redis://127.0.0.1:${opts.port}`,
    process: proc,
    stop: () => proc.stop('SIGTERM'),
  };
}
