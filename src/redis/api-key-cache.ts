/**
 * The API-key lookup cache: a key's SHA-256 -> its id, tenant and status, so the hot
 * path of authentication costs one GET. Entries expire after a short TTL; a revocation
 * overwrites the entry (never deletes it), so a stale "active" read racing the revoke
 * cannot put an active entry back (authenticators write with NX).
 */
import type { Redis } from './client';
import { z } from 'zod';
import { ApiKeyStatus, type ApiKey } from '../db/api-key-repository';
import type { Tenant } from '../db/tenant-repository';
import { CacheKeys } from './cache-keys';

/** How long a resolved key stays cached; bounds how stale a lookup can be if a revocation's cache write failed. */
export const API_KEY_LOOKUP_TTL_SECONDS = 60;

const limit = z.number().int().positive().safe().nullable();
const limitsSchema = z.object({ rpm: limit, tpm: limit, maxParallel: limit });

/**
 * The cached entry at CacheKeys.apiKeyLookup(hash): JSON, never the key. It carries the
 * key's and its tenant's rate limits, so the edge needs no database read per request;
 * changing a limit rewrites the entries it concerns.
 */
const lookupEntrySchema = z.object({
  id: z.string().min(1),
  tenant_id: z.string().min(1),
  status: z.enum([ApiKeyStatus.active, ApiKeyStatus.revoked]),
  limits: z.object({ tenant: limitsSchema, key: limitsSchema }),
});
export type ApiKeyLookupEntry = z.infer<typeof lookupEntrySchema>;

/** The entry of a key as PostgreSQL has it. */
export function lookupEntryOf(key: Pick<ApiKey, 'id' | 'tenantId' | 'status' | 'limits'>, tenant: Pick<Tenant, 'limits'>): ApiKeyLookupEntry {
  return { id: key.id, tenant_id: key.tenantId, status: key.status, limits: { tenant: tenant.limits, key: key.limits } };
}

/**
 * The cached entry of a key hash; `null` when nothing is cached, `'unreadable'` when
 * the entry is not valid JSON of the expected shape. Throws only when Redis fails.
 */
export async function readApiKeyLookup(redis: Pick<Redis, 'get'>, keyHash: string): Promise<ApiKeyLookupEntry | null | 'unreadable'> {
  const raw = await redis.get(CacheKeys.apiKeyLookup(keyHash));
  if (raw === null) return null;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return 'unreadable';
  }
  const parsed = lookupEntrySchema.safeParse(json);
  return parsed.success ? parsed.data : 'unreadable';
}

/** Writes the entry of a key; `onlyIfAbsent` (NX) for lookups, an overwrite for revocations. True when written. */
export async function writeApiKeyLookup(
  redis: Pick<Redis, 'set'>,
  keyHash: string,
  entry: ApiKeyLookupEntry,
  options: { ttlSeconds: number; onlyIfAbsent: boolean },
): Promise<boolean> {
  const key = CacheKeys.apiKeyLookup(keyHash);
  const value = JSON.stringify(entry);
  const reply = options.onlyIfAbsent
    ? await redis.set(key, value, 'EX', options.ttlSeconds, 'NX')
    : await redis.set(key, value, 'EX', options.ttlSeconds);
  return reply === 'OK';
}

/**
 * Rewrites the entries of `keys` from PostgreSQL's state (after a change of their or
 * their tenant's limits), so the change applies to the next request, not after the TTL.
 */
export async function refreshApiKeyLookups(
  redis: Pick<Redis, 'set'>,
  keys: ReadonlyArray<Pick<ApiKey, 'id' | 'tenantId' | 'status' | 'limits' | 'keyHash'>>,
  tenant: Pick<Tenant, 'limits'>,
  ttlSeconds: number,
): Promise<void> {
  await Promise.all(keys.map((key) => writeApiKeyLookup(redis, key.keyHash, lookupEntryOf(key, tenant), { ttlSeconds, onlyIfAbsent: false })));
}
