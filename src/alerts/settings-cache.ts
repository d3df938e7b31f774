/**
 * A worker's short-lived cache of alert settings, so that a settlement of a tenant
 * without alerts (the common case) costs no database read at all. Entries live
 * ALERT_SETTINGS_CACHE_SECONDS: a changed URL or threshold list applies to settlements
 * within that time. 0 disables the cache.
 */
import type { SubjectSettings } from './alert-repository';

/** Entries kept at most; past it the cache starts over (a bound, not an LRU: misses only cost a read). */
const MAX_ENTRIES = 10_000;

export function createSettingsCache(opts: { ttlMs: number; load: (tenantId: string, apiKeyId: string) => Promise<SubjectSettings | undefined>; now?: () => number }) {
  const now = opts.now ?? Date.now;
  const entries = new Map<string, { expiresAt: number; value: SubjectSettings | undefined }>();
  return {
    async get(tenantId: string, apiKeyId: string): Promise<SubjectSettings | undefined> {
      if (opts.ttlMs <= 0) return opts.load(tenantId, apiKeyId);
      const key = `${tenantId}\n${apiKeyId}`;
      const hit = entries.get(key);
      if (hit && hit.expiresAt > now()) return hit.value;
      const value = await opts.load(tenantId, apiKeyId);
      if (entries.size >= MAX_ENTRIES) entries.clear();
      entries.set(key, { expiresAt: now() + opts.ttlMs, value });
      return value;
    },
  };
}
