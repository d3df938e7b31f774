/**
 * The Redis side of the consistency check (M4.3): the used/spent figure and the
 * compare-and-set token (warmup_id, version) of many counter hashes, read with pipelined
 * HMGETs in batches (on a Redis Cluster one pipeline per master per batch), so 200,000 counters
 * cost a few hundred round trips. Read-only: the
 * counters move only through the Lua scripts (src/redis/scripts.ts).
 */
import { pipelinedByNode, type Redis } from '../redis/client';
import { exactInteger } from '../billing/money';
import { CacheKeys } from '../redis/cache-keys';
import type { CounterToken } from '../redis/scripts';
import { SubjectKind, type SubjectRef } from './ledger-figures';

/** What one counter hash holds, or null when it is not in Redis. */
export type CounterReading = {
  /** null when the stored value is not an integer (corrupt: it differs from any ledger figure). */
  usedMicros: number | null;
  token: CounterToken;
} | null;

/** HMGETs per pipeline: large enough to amortise the round trip, small enough not to stall Redis. */
export const COUNTER_READ_BATCH = 1000;

/** The Redis key of a subject's counter hash. */
export function counterKey(subject: SubjectRef): string {
  return subject.kind === SubjectKind.tenant ? CacheKeys.tenantQuota(subject.tenantId) : CacheKeys.apiKeyBudget(subject.tenantId, subject.apiKeyId ?? '');
}

const FIELDS = {
  [SubjectKind.tenant]: ['limit_micros', 'used_micros'],
  [SubjectKind.apiKey]: ['budget_micros', 'spent_micros'],
} as const;

function reading(values: ReadonlyArray<string | null>): CounterReading {
  const [limit, used, warmupId, version] = values;
  // Every hash a script builds has its limit field: without it the hash is not a counter.
  if (limit === null || limit === undefined) return null;
  const usedMicros = exactInteger(used ?? '0');
  const parsedVersion = exactInteger(version ?? '0');
  return {
    usedMicros: Number.isNaN(usedMicros) ? null : usedMicros,
    // An unreadable version never matches what the script compares against: such a counter is never replaced.
    token: { warmupId: warmupId ?? '', version: Number.isNaN(parsedVersion) || parsedVersion < 0 ? Number.MAX_SAFE_INTEGER : parsedVersion },
  };
}

/** The readings of `subjects`, in their order. */
export async function readCounters(redis: Redis, subjects: readonly SubjectRef[], batchSize = COUNTER_READ_BATCH): Promise<CounterReading[]> {
  const readings: CounterReading[] = [];
  for (let start = 0; start < subjects.length; start += batchSize) {
    const batch = subjects.slice(start, start + batchSize);
    const replies = await pipelinedByNode(redis, batch, counterKey, (pipeline, subject) =>
      pipeline.hmget(counterKey(subject), ...FIELDS[subject.kind], 'warmup_id', 'version'));
    for (const [err, values] of replies) {
      if (err) throw err;
      readings.push(reading(values as Array<string | null>));
    }
  }
  return readings;
}

/** Same token: no script moved the counter, and no build replaced it, in between. */
export function sameToken(a: CounterToken, b: CounterToken): boolean {
  return a.warmupId === b.warmupId && a.version === b.version;
}
