/**
 * Read-only views of the cached quota counters (for sync, consistency checks, admin
 * reads and tests). Writes never happen here: counters move only through the Lua
 * scripts in src/redis/scripts.ts, which keep them atomic and idempotent.
 */
import type { Redis } from './client';
import { exactInteger } from '../billing/money';
import { CacheKeys } from './cache-keys';
import type { KeyCounters, TenantCounters } from './scripts';

/** Thrown when a cached counter is not an integer (money is integer micros; a float or text means corruption). */
export class CorruptQuotaCounterError extends Error {
  override name = 'CorruptQuotaCounterError';

  constructor(
    readonly key: string,
    readonly field: string,
    readonly value: string | undefined,
  ) {
    super(`Cached counter ${key} ${field} is not a safe integer: ${String(value)}`);
  }
}

function integerField(key: string, hash: Record<string, string>, field: string, fallback?: number): number {
  const raw = hash[field];
  if (raw === undefined && fallback !== undefined) return fallback;
  const value = exactInteger(raw);
  if (Number.isNaN(value)) throw new CorruptQuotaCounterError(key, field, raw);
  return value;
}

/** A tenant's cached quota (used includes open reservations), or null when it is not cached. */
export async function readTenantQuota(redis: Redis, tenantId: string): Promise<TenantCounters | null> {
  const key = CacheKeys.tenantQuota(tenantId);
  const hash = await redis.hgetall(key);
  if (Object.keys(hash).length === 0) return null;
  return {
    limitMicros: integerField(key, hash, 'limit_micros'),
    usedMicros: integerField(key, hash, 'used_micros', 0),
  };
}

/** An API key's cached budget (null budget = unlimited; spent includes open reservations), or null when not cached. */
export async function readKeyBudget(redis: Redis, tenantId: string, apiKeyId: string): Promise<KeyCounters | null> {
  const key = CacheKeys.apiKeyBudget(tenantId, apiKeyId);
  const hash = await redis.hgetall(key);
  if (Object.keys(hash).length === 0) return null;
  const budget = integerField(key, hash, 'budget_micros');
  return {
    budgetMicros: budget < 0 ? null : budget,
    spentMicros: integerField(key, hash, 'spent_micros', 0),
  };
}
