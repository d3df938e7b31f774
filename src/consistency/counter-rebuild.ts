/**
 * Rebuilding Redis counters from the ledger for the consistency check (M4.3), through the
 * one warm-up script, lua/cache_warmup.lua:
 * - a missing counter (Redis lost it) is warmed in create mode: created only if still absent;
 * - a counter confirmed to drift is healed in replace mode: overwritten only if it is still
 *   the counter the check confirmed (its warmup_id and version unchanged).
 * Either way the build carries one ledger snapshot of the subject and marks, atomically with
 * it, the records of its pending reservations and of its rows settled within the request
 * record TTL, so no reservation in flight is lost and a settlement still to come applies
 * exactly what the rebuilt counter lacks.
 */
import type { QuotaScripts, CounterToken, WarmupMarks } from '../redis/scripts';
import { SubjectKind, type ConsistencyLedger, type SubjectRef, type SubjectSnapshot } from './ledger-figures';

/** Subjects per snapshot query (ids in one JSON parameter, index-backed lookups). */
export const SNAPSHOT_BATCH = 500;
/** Lua calls in flight at once: one connection pipelines them. */
export const CALLS_IN_FLIGHT = 32;

export function subjectId(subject: SubjectRef): string {
  return subject.kind === SubjectKind.tenant ? `tenant:${subject.tenantId}` : `api_key:${subject.apiKeyId ?? ''}`;
}

/** Runs `fn` over `items` with at most `limit` calls pending, in order of start; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) results[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export interface CounterRebuildDeps {
  scripts: Pick<QuotaScripts, 'warmTenant' | 'warmKey' | 'replaceTenant' | 'replaceKey'>;
  ledger: Pick<ConsistencyLedger, 'snapshots'>;
  /** The request record TTL (RESERVATION_TTL_SECONDS): how late a settled row's Redis settlement may still come. */
  recordTtlSeconds: number;
}

export function createCounterRebuild(deps: CounterRebuildDeps) {
  const marksOf = (snapshot: SubjectSnapshot): WarmupMarks => ({ pending: snapshot.pending, recentlySettled: snapshot.recentlySettled });

  /** Snapshots of `subjects`, keyed by subjectId(); subjects that no longer exist are absent. */
  async function snapshotsOf(subjects: readonly SubjectRef[]): Promise<Map<string, SubjectSnapshot>> {
    const found = new Map<string, SubjectSnapshot>();
    for (const kind of [SubjectKind.tenant, SubjectKind.apiKey]) {
      const ids = subjects.filter((s) => s.kind === kind).map((s) => (kind === SubjectKind.tenant ? s.tenantId : s.apiKeyId ?? ''));
      for (let start = 0; start < ids.length; start += SNAPSHOT_BATCH) {
        const batch = await deps.ledger.snapshots(kind, ids.slice(start, start + SNAPSHOT_BATCH), deps.recordTtlSeconds);
        for (const snapshot of batch.values()) found.set(subjectId(snapshot), snapshot);
      }
    }
    return found;
  }

  /** cache_warmup.lua create mode: true when this call created the counter (false: someone else warmed it first). */
  function warm(snapshot: SubjectSnapshot): Promise<boolean> {
    return snapshot.kind === SubjectKind.tenant
      ? deps.scripts.warmTenant(snapshot.tenantId, { limitMicros: snapshot.limitMicros ?? 0, usedMicros: snapshot.usageMicros }, marksOf(snapshot))
      : deps.scripts.warmKey(snapshot.tenantId, snapshot.apiKeyId ?? '', { budgetMicros: snapshot.limitMicros, spentMicros: snapshot.usageMicros }, marksOf(snapshot));
  }

  return {
    snapshotsOf,

    /**
     * Warms every missing counter of `subjects` from a fresh snapshot of each (create mode: a
     * counter another warm-up built meanwhile stays). The subjects whose counter this created.
     */
    async warmMissing(subjects: readonly SubjectRef[]): Promise<SubjectRef[]> {
      const created: SubjectRef[] = [];
      for (let start = 0; start < subjects.length; start += SNAPSHOT_BATCH) {
        const snapshots = [...(await snapshotsOf(subjects.slice(start, start + SNAPSHOT_BATCH))).values()].filter((s) => s.active);
        const results = await mapLimit(snapshots, CALLS_IN_FLIGHT, warm);
        snapshots.forEach((s, i) => results[i] && created.push(s));
      }
      return created;
    },

    /** Warms one counter that vanished between two reads, from the snapshot read after the second. */
    warm,

    /**
     * cache_warmup.lua replace mode: rebuilds a confirmed drifted counter from `snapshot`
     * (read right after `token`). False when the counter moved since: nothing changed.
     */
    heal(snapshot: SubjectSnapshot, token: CounterToken): Promise<boolean> {
      return snapshot.kind === SubjectKind.tenant
        ? deps.scripts.replaceTenant(snapshot.tenantId, { limitMicros: snapshot.limitMicros ?? 0, usedMicros: snapshot.usageMicros }, marksOf(snapshot), token)
        : deps.scripts.replaceKey(snapshot.tenantId, snapshot.apiKeyId ?? '', { budgetMicros: snapshot.limitMicros, spentMicros: snapshot.usageMicros }, marksOf(snapshot), token);
    },
  };
}

export type CounterRebuild = ReturnType<typeof createCounterRebuild>;
