/**
 * Shared fixtures for the Redis quota tests: a fresh tenant + key per test (unique
 * ids, so test files can share one Redis), and raw EVAL of a script for the cases
 * the typed runner refuses before Redis sees them (malformed ARGV).
 */
import { Registry } from 'prom-client';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { assembleLuaSource, createQuotaScripts, type QuotaScriptName, type QuotaScripts } from '../../src/redis/scripts';
import { uniqueId } from '../helpers/services';

export const TTL_SECONDS = 3600;

export interface QuotaFixture {
  tenantId: string;
  apiKeyId: string;
  scripts: QuotaScripts;
  registry: Registry;
  /** A new request id on every call. */
  requestId: () => string;
  quotaKey: string;
  budgetKey: string;
  recordKey: (requestId: string) => string;
}

/** Warms a new tenant (limit, used) and key (budget null = unlimited, spent) through the real warm-up script. */
export async function quotaFixture(
  redis: Redis,
  opts: { limitMicros: number; usedMicros?: number; budgetMicros?: number | null; spentMicros?: number },
): Promise<QuotaFixture> {
  const tenantId = uniqueId('tenant');
  const apiKeyId = uniqueId('key');
  const registry = new Registry();
  const scripts = createQuotaScripts(redis, { ttlSeconds: TTL_SECONDS, registry });
  await scripts.warmTenant(tenantId, { limitMicros: opts.limitMicros, usedMicros: opts.usedMicros ?? 0 });
  await scripts.warmKey(tenantId, apiKeyId, { budgetMicros: opts.budgetMicros ?? null, spentMicros: opts.spentMicros ?? 0 });
  return {
    tenantId,
    apiKeyId,
    scripts,
    registry,
    requestId: () => uniqueId('req'),
    quotaKey: CacheKeys.tenantQuota(tenantId),
    budgetKey: CacheKeys.apiKeyBudget(tenantId, apiKeyId),
    recordKey: (requestId) => CacheKeys.request(tenantId, requestId),
  };
}

/** The source Redis runs for a script: its lua/lib helpers prepended, as the runner sends it. */
export function luaSource(name: QuotaScriptName): string {
  return assembleLuaSource(name);
}

/** EVAL of a script's source with raw keys and ARGV, bypassing the typed runner's own checks. */
export async function rawEval(redis: Redis, name: QuotaScriptName, keys: string[], argv: string[]): Promise<unknown> {
  return redis.eval(luaSource(name), keys.length, ...keys, ...argv);
}

/**
 * Both counters as stored, as exact strings (so a float or a wrong type would show).
 * warmup_id, a random id per warm-up (cache_warmup.lua), and version, the consistency
 * check's token, are left out: cache-warmup.test.ts and counter-version.test.ts check them.
 */
export async function counters(redis: Redis, f: QuotaFixture): Promise<{ quota: Record<string, string>; budget: Record<string, string> }> {
  const money = ({ warmup_id: _warmupId, version: _version, ...fields }: Record<string, string>): Record<string, string> => fields;
  return { quota: money(await redis.hgetall(f.quotaKey)), budget: money(await redis.hgetall(f.budgetKey)) };
}
