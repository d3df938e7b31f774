/**
 * API keys: issue (the key is shown once and stored hashed), read with its live
 * spend, revoke.
 *
 * Revocation is immediate: after the database says "revoked", the key's lookup cache
 * entry is overwritten with a revoked entry. Overwriting (rather than deleting) also
 * closes a race: an authenticator that read the key as active just before the revoke
 * writes its entry with SET NX, which cannot replace the revoked one.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { ApiKeyStatus, type ApiKey, type ApiKeyRepository } from '../db/api-key-repository';
import { API_KEY_LOOKUP_TTL_SECONDS, writeApiKeyLookup } from '../redis/api-key-cache';
import type { Balances } from './balances';

/** Every issued key starts with this, so leaked keys are easy to recognise (and to scan for). */
export const API_KEY_PREFIX = 'sk-bq-';

/** A new key: 256 random bits, base64url. */
export function generateApiKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** A new key id: public (it appears in the ledger and in cache keys), so hex only. */
export function generateApiKeyId(): string {
  return `key_${randomBytes(12).toString('hex')}`;
}

/** Thrown when an API key id is unknown. */
export class ApiKeyNotFoundError extends Error {
  override name = 'ApiKeyNotFoundError';

  constructor(readonly apiKeyId: string) {
    super(`API key ${apiKeyId} not found`);
  }
}

/** Thrown when a key is revoked in PostgreSQL but its cached "active" entry could not be overwritten yet: retrying makes it immediate. */
export class RevocationNotCachedError extends Error {
  override name = 'RevocationNotCachedError';
}

export interface ApiKeyServiceDeps {
  apiKeys: Pick<ApiKeyRepository, 'create' | 'findById' | 'revoke'>;
  redis: Pick<Redis, 'set'>;
  balances: Pick<Balances, 'keySpentMicros'>;
  /** TTL of the lookup entry a revocation writes. @default API_KEY_LOOKUP_TTL_SECONDS */
  lookupTtlSeconds?: number;
}

export function createApiKeyService(deps: ApiKeyServiceDeps) {
  const ttlSeconds = deps.lookupTtlSeconds ?? API_KEY_LOOKUP_TTL_SECONDS;

  return {
    /** Issues a key; the plaintext is in the answer only. An unknown tenant is a TenantNotFoundError. */
    async issue(tenantId: string, name: string, budgetMicros: number | null): Promise<{ stored: ApiKey; key: string }> {
      const key = generateApiKey();
      const stored = await deps.apiKeys.create({ id: generateApiKeyId(), tenantId, name, key, budgetMicros });
      return { stored, key };
    },

    /** A key with its live spend (reservations included). */
    async get(apiKeyId: string): Promise<{ key: ApiKey; spentMicros: number }> {
      const key = await deps.apiKeys.findById(apiKeyId);
      if (!key) throw new ApiKeyNotFoundError(apiKeyId);
      return { key, spentMicros: await deps.balances.keySpentMicros(key.tenantId, key.id) };
    },

    /** Idempotent: revoking a revoked key answers the same and rewrites the cache entry. */
    async revoke(apiKeyId: string): Promise<ApiKey> {
      const revoked = await deps.apiKeys.revoke(apiKeyId);
      if (!revoked) throw new ApiKeyNotFoundError(apiKeyId);
      try {
        await writeApiKeyLookup(deps.redis, revoked.keyHash, { id: revoked.id, tenant_id: revoked.tenantId, status: ApiKeyStatus.revoked }, { ttlSeconds, onlyIfAbsent: false });
      } catch (err) {
        throw new RevocationNotCachedError('the key is revoked but its cache entry could not be updated', { cause: err });
      }
      return revoked;
    },
  };
}

export type ApiKeyService = ReturnType<typeof createApiKeyService>;
