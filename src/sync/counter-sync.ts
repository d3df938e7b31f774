/**
 * Quota sync (M4.1) and API-key sync (M4.2): copies the live Redis counters into the
 * synced tables (tenant_quota.used_micros, api_key_quota.spent_micros, with synced_at), so
 * reports, the PostgreSQL fallback's operators and the consistency check see figures at
 * most one period old (M4.4).
 *
 * - Paged by primary key (keyset), one pipelined Redis read and one batched UPDATE per page:
 *   100,000 subjects are 100 round trips of each, not 100,000 (bench/sync.ts).
 * - Safe while traffic runs: each counter hash carries a `version` that every Lua script
 *   changing it advances, and a rebuilt hash starts above any version it had (lua headers). The
 *   UPDATE writes only when the table holds no newer version, so a slow sync that read
 *   earlier never writes its older value over a newer one written by a faster run.
 * - A counter not cached in Redis (never used, or lost and not yet warmed) is skipped: the
 *   table keeps its last synced value and the next warm-up rebuilds Redis from the ledger.
 * - A counter that is not an integer (a hand edit gone wrong) is not copied: the table keeps its
 *   last figure, the run names the key in `corruptKeys` and goes on with the others (one bad hash
 *   must not stop the sync of every other tenant); the consistency check reports and heals it.
 */
import type { Knex } from 'knex';
import { pipelinedByNode, type Redis } from '../redis/client';
import { CacheKeys } from '../redis/cache-keys';

export type SyncJob = 'quota' | 'apikey';

/** What one sync run did; small and serialisable (a Temporal activity result). */
export interface SyncRunSummary {
  job: SyncJob;
  /** Rows of the table looked at. */
  subjects: number;
  /** Rows whose synced figure was written. */
  written: number;
  /** Counters not cached in Redis (left as they are). */
  notCached: number;
  /** Rows left alone because the table already held a newer version. */
  newerInTable: number;
  /** Counters that do not hold an integer, left uncopied (at most the first 20 keys are named). */
  corrupt: number;
  corruptKeys: string[];
  startedAt: string;
  durationMs: number;
}

export interface SyncScope {
  /** Only these tenants (quota) or these tenants' keys (apikey), e.g. right after a top-up (M4.5). */
  tenantIds?: string[];
}

/** The counter fields each job copies, and the table they go to. */
const TABLES = {
  quota: { table: 'tenant_quota', id: 'tenant_id', column: 'used_micros', field: 'used_micros' },
  apikey: { table: 'api_key_quota', id: 'id', column: 'spent_micros', field: 'spent_micros' },
} as const;

const CANONICAL_INTEGER = /^-?(0|[1-9][0-9]*)$/;

/** How many corrupt keys a summary names (it goes into Temporal history and the logs). */
const MAX_NAMED_CORRUPT_KEYS = 20;

type CounterReading = { id: string; value: string; version: string } | null | { corrupt: string };

interface Subject {
  id: string;
  tenantId: string;
}

export interface CounterSyncOptions {
  /** Rows per page (one pipeline and one UPDATE each). @default 1000 */
  pageSize?: number;
}

export function createCounterSync(db: Knex, redis: Redis, opts: CounterSyncOptions = {}) {
  const pageSize = opts.pageSize ?? 1000;

  async function page(job: SyncJob, after: string | null, scope: SyncScope): Promise<Subject[]> {
    const t = TABLES[job];
    const query = db(t.table)
      .select({ id: t.id, tenantId: 'tenant_id' })
      .orderBy(t.id)
      .limit(pageSize);
    if (after !== null) query.where(t.id, '>', after);
    if (scope.tenantIds) query.whereIn('tenant_id', scope.tenantIds);
    return query;
  }

  function counterKey(job: SyncJob, s: Subject): string {
    return job === 'quota' ? CacheKeys.tenantQuota(s.tenantId) : CacheKeys.apiKeyBudget(s.tenantId, s.id);
  }

  /** One pipelined HMGET per subject (on a cluster, a pipeline per master): the counter and its version, read together (one hash). */
  async function readCounters(job: SyncJob, subjects: Subject[]): Promise<CounterReading[]> {
    const replies = await pipelinedByNode(redis, subjects, (s) => counterKey(job, s), (pipeline, s) => pipeline.hmget(counterKey(job, s), TABLES[job].field, 'version'));
    return subjects.map((subject, i) => {
      const [err, reply] = replies[i] ?? [new Error('Redis pipeline answered fewer replies than commands'), null];
      if (err) throw err;
      const [value, version] = reply as [string | null, string | null];
      if (value === null) return null;
      if (!CANONICAL_INTEGER.test(value) || (version !== null && !CANONICAL_INTEGER.test(version))) return { corrupt: counterKey(job, subject) };
      // A hash written before versions existed counts as version 0: written, but below any versioned value.
      return { id: subject.id, value, version: version ?? '0' };
    });
  }

  /** One UPDATE for the page; returns how many rows took the new figure. */
  async function write(job: SyncJob, rows: Array<{ id: string; value: string; version: string }>, readAt: Date): Promise<number> {
    if (rows.length === 0) return 0;
    const t = TABLES[job];
    const result: { rowCount: number } = await db.raw(
      `UPDATE ${t.table} AS t
          SET ${t.column} = v.value, synced_version = v.version, synced_at = ?
         FROM (SELECT unnest(?::text[]) AS id, unnest(?::bigint[]) AS value, unnest(?::bigint[]) AS version) AS v
        WHERE t.${t.id} = v.id
          AND (t.synced_version IS NULL OR t.synced_version <= v.version)`,
      [readAt, rows.map((r) => r.id), rows.map((r) => r.value), rows.map((r) => r.version)],
    );
    return result.rowCount;
  }

  async function run(job: SyncJob, scope: SyncScope = {}): Promise<SyncRunSummary> {
    const started = Date.now();
    const summary: SyncRunSummary = { job, subjects: 0, written: 0, notCached: 0, newerInTable: 0, corrupt: 0, corruptKeys: [], startedAt: new Date(started).toISOString(), durationMs: 0 };
    if (scope.tenantIds?.length === 0) return summary;
    let after: string | null = null;
    for (;;) {
      const subjects = await page(job, after, scope);
      if (subjects.length === 0) break;
      // synced_at is when the figures were read (not written): the consistency check compares a synced
      // figure with the ledger only when no ledger row of the subject changed since then.
      const readAt = new Date();
      const counters = await readCounters(job, subjects);
      const cached = counters.filter((c): c is { id: string; value: string; version: string } => c !== null && !('corrupt' in c));
      for (const c of counters) {
        if (c === null || !('corrupt' in c)) continue;
        summary.corrupt++;
        if (summary.corruptKeys.length < MAX_NAMED_CORRUPT_KEYS) summary.corruptKeys.push(c.corrupt);
      }
      const written = await write(job, cached, readAt);
      summary.subjects += subjects.length;
      summary.notCached += counters.filter((c) => c === null).length;
      summary.written += written;
      summary.newerInTable += cached.length - written;
      after = subjects[subjects.length - 1]?.id ?? null;
      if (subjects.length < pageSize) break;
    }
    summary.durationMs = Date.now() - started;
    return summary;
  }

  return {
    /** Quota sync (M4.1): Redis used_micros -> tenant_quota. */
    syncTenantQuotas: (scope?: SyncScope) => run('quota', scope),
    /** API-key sync (M4.2): Redis spent_micros -> api_key_quota. */
    syncApiKeyBudgets: (scope?: SyncScope) => run('apikey', scope),
  };
}

export type CounterSync = ReturnType<typeof createCounterSync>;
