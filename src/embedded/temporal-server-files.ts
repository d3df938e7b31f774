/**
 * What a Temporal server process of the embedded cluster is started from: the binaries
 * scripts/cluster-setup.sh built, the PostgreSQL schema deploy/temporal/setup-schema.sh applies,
 * the database environment deploy/temporal/server.yaml reads, and the dynamic config file.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ServiceStartError } from './child';
import { TEMPORAL_DYNAMIC_CONFIG } from './temporal';
import type { TemporalClusterOptions } from './temporal-cluster';

/** Where cluster-setup.sh caches the server, the schema tool and the schemas (relative to the project root). */
export const TEMPORAL_SERVER_CACHE = '.cache/temporal-server';

type ServerFileOptions = Pick<TemporalClusterOptions, 'rootDir' | 'dir' | 'postgres' | 'databases' | 'fairness'>;

export function temporalServerBinaries(rootDir: string): { server: string; sqlTool: string; schemaDir: string } {
  const cache = path.join(rootDir, TEMPORAL_SERVER_CACHE);
  const found = {
    server: path.join(cache, 'temporal-server'),
    sqlTool: path.join(cache, 'temporal-sql-tool'),
    schemaDir: path.join(cache, 'schema'),
  };
  for (const file of Object.values(found)) {
    if (!fs.existsSync(file)) throw new ServiceStartError(`${file} not found: run \`bash scripts/cluster-setup.sh\` (builds the Temporal server once)`);
  }
  return found;
}

/** The environment deploy/temporal/server.yaml and setup-schema.sh read for this database. */
export function databaseEnv(opts: ServerFileOptions): Record<string, string> {
  return {
    POSTGRES_SEEDS: opts.postgres.host,
    DB_PORT: String(opts.postgres.port),
    POSTGRES_USER: opts.postgres.user,
    POSTGRES_PWD: opts.postgres.password ?? '',
    DBNAME: opts.databases?.persistence ?? 'temporal',
    VISIBILITY_DBNAME: opts.databases?.visibility ?? 'temporal_visibility',
  };
}

/** Runs deploy/temporal/setup-schema.sh: creates or upgrades both databases. */
export function applyTemporalSchema(opts: ServerFileOptions): Promise<void> {
  const bin = temporalServerBinaries(opts.rootDir);
  return new Promise((resolve, reject) => {
    execFile('sh', [path.join(opts.rootDir, 'deploy/temporal/setup-schema.sh')], {
      env: { PATH: process.env.PATH ?? '', ...databaseEnv(opts), SCHEMA_DIR: bin.schemaDir, TEMPORAL_SQL_TOOL: bin.sqlTool },
      timeout: 120_000,
    }, (err, _stdout, stderr) => {
      if (err) reject(new ServiceStartError(`Temporal schema setup failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

/**
 * The dynamic config every process reads: deploy/temporal/dynamicconfig/billing.yaml, or, with
 * fairness off, a copy saying so (the file is the only way to give a full server dynamic config).
 */
export function dynamicConfigFile(opts: ServerFileOptions): string {
  const shared = path.join(opts.rootDir, 'deploy/temporal/dynamicconfig/billing.yaml');
  if (opts.fairness !== false) return shared;
  const values = { ...TEMPORAL_DYNAMIC_CONFIG, 'matching.enableFairness': false };
  const file = path.join(opts.dir, 'dynamicconfig-no-fairness.yaml');
  fs.writeFileSync(file, Object.entries(values).map(([key, value]) => `${key}:\n  - value: ${JSON.stringify(value)}\n`).join(''));
  return file;
}
