/**
 * The API-key lookup cache: a key's SHA-256 -> its id, tenant and status, so the hot
 * path of authentication costs one GET. Entries expire after a short TTL; a revocation
 * overwrites the entry (never deletes it), so a stale "active" read racing the revoke
 * cannot put an active entry back (authenticators write with NX).
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { ApiKeyStatus } from '../db/api-key-repository';
import { CacheKeys } from './cache-keys';

/** How long a resolved key stays cached; bounds how stale a lookup can be if a revocation's cache write failed. */
export const API_KEY_LOOKUP_TTL_SECONDS = 60;

/** The cached entry at CacheKeys.apiKeyLookup(hash): JSON, never the key. */
const lookupEntrySchema = z.object({
  id: z.string().min(1),
  tenant_id: z.string().min(1),
  status: z.enum([ApiKeyStatus.active, ApiKeyStatus.revoked]),
});
export type ApiKeyLookupEntry = z.infer<typeof lookupEntrySchema>;

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
