/**
 * Embedded PostgreSQL: a private cluster (initdb) under the data directory, on its
 * own port, loopback only. PostgreSQL refuses to run as root, so when we are root
 * the cluster is owned by and run as the `postgres` system user.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Client } from 'pg';
import { assertPortFree, spawnService, waitUntilReady, ServiceStartError, type ServiceProcess } from './child';

export interface EmbeddedPostgresOptions {
  port: number;
  dir: string;
  database?: string;
  /** fsync off: for throwaway test clusters only. */
  unsafeFast?: boolean;
}

export interface EmbeddedPostgres {
  url: string;
  process: ServiceProcess;
  stop(): Promise<void>;
}

/** Finds the newest PostgreSQL server binaries (Debian keeps them off PATH). */
export function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  if (fs.existsSync(base)) {
    const versions = fs.readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const dir = path.join(base, v, 'bin');
      if (fs.existsSync(path.join(dir, 'initdb'))) return dir;
    }
  }
  try {
    return path.dirname(execFileSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).trim());
  } catch {
    throw new ServiceStartError('PostgreSQL server binaries (initdb, postgres) not found: run `npm run setup` (apt-get install postgresql) or set DATABASE_URL');
  }
}

interface RunAs { uid?: number; gid?: number }

function runAsIdentity(): RunAs {
  if (process.getuid?.() !== 0) return {};
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  await assertPortFree(opts.port, 'PostgreSQL');
  const bin = postgresBinDir();
  const who = runAsIdentity();
  const pgdata = path.resolve(opts.dir);
  const env = { ...process.env, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8' };

  if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
    fs.mkdirSync(path.dirname(pgdata), { recursive: true }); // parents stay traversable for the postgres user
    fs.mkdirSync(pgdata, { recursive: true, mode: 0o700 });
    if (who.uid !== undefined) fs.chownSync(pgdata, who.uid, who.gid ?? who.uid);
    try {
      execFileSync(path.join(bin, 'initdb'), ['-D', pgdata, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-instructions'], {
        ...who, env, stdio: 'pipe', cwd: '/',
      });
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? String(err);
      throw new ServiceStartError(`initdb failed for ${pgdata}: ${stderr.trim()}`);
    }
  }

  const args = [
    '-D', pgdata,
    '-p', String(opts.port),
    '-c', 'listen_addresses=127.0.0.1',
    '-c', `unix_socket_directories=${pgdata}`,
    '-c', 'max_connections=200',
  ];
  if (opts.unsafeFast) args.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
  const proc = spawnService('postgres', path.join(bin, 'postgres'), args, { ...who, env, cwd: '/' });

  const adminUrl = `postgres://postgres@127.0.0.1:${opts.port}/postgres`;
  await waitUntilReady(proc, async () => {
    const c = new Client({ connectionString: adminUrl });
    try {
      await c.connect();
      await c.query('SELECT 1');
      return true;
    } finally {
      await c.end().catch(() => undefined);
    }
  }, 30_000);

  const database = opts.database ?? 'billing';
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (found.rowCount === 0) await admin.query(`CREATE DATABASE "${database.replace(/"/g, '')}"`);
  } finally {
    await admin.end();
  }
  return {
    url: `postgres://postgres@127.0.0.1:${opts.port}/${database}`,
    process: proc,
    // SIGINT = PostgreSQL's "fast shutdown": clean, without waiting for clients.
    stop: () => proc.stop('SIGINT', 20_000),
  };
}
