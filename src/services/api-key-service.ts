/**
 * API keys: issue (the key is shown once and stored hashed), read with its live
 * spend, change its rate limits, revoke.
 *
 * Revocation is immediate: after the database says "revoked", the key's lookup cache
 * entry is overwritten with a revoked entry. Overwriting (rather than deleting) also
 * closes a race: an authenticator that read the key as active just before the revoke
 * writes its entry with SET NX, which cannot replace the revoked one.
 *
 * A key may have a webhook URL of its own for its budget alerts (else it alerts to its
 * tenant's); alerts are signed with the tenant's secret, so the first URL given to a key
 * of a tenant without a secret generates it, returned once in that answer.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { AlertRepository } from '../alerts/alert-repository';
import type { AlertSettings } from '../alerts/alert-settings';
import type { AlertSecretRepository } from '../alerts/alert-secrets';
import type { ApiKey, ApiKeyRepository, ApiKeySettingsPatch } from '../db/api-key-repository';
import { AlertSubjectKind } from '../workflows/budget-alert-definitions';
import type { TenantRepository } from '../db/tenant-repository';
import { UNLIMITED, type RateLimits } from '../edge/limits';
import type { Logger } from '../log';
import { API_KEY_LOOKUP_TTL_SECONDS, lookupEntryOf, refreshApiKeyLookups, writeApiKeyLookup } from '../redis/api-key-cache';
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
  /** Issuing a key with a webhook URL and generating its tenant's secret commit together. */
  db: Pick<Knex, 'transaction'>;
  apiKeys: Pick<ApiKeyRepository, 'create' | 'findById' | 'revoke' | 'updateSettings'>;
  alerts: Pick<AlertRepository, 'rearm'>;
  alertSecrets: Pick<AlertSecretRepository, 'ensure'>;
  tenants: Pick<TenantRepository, 'find'>;
  redis: Pick<Redis, 'set'>;
  balances: Pick<Balances, 'keySpentMicros'>;
  log: Pick<Logger, 'warn'>;
  /** TTL of the lookup entry a revocation writes. @default API_KEY_LOOKUP_TTL_SECONDS */
  lookupTtlSeconds?: number;
}

export function createApiKeyService(deps: ApiKeyServiceDeps) {
  const ttlSeconds = deps.lookupTtlSeconds ?? API_KEY_LOOKUP_TTL_SECONDS;

  /** A key with a URL of its own needs its tenant's secret; the new secret when created now. */
  async function secretFor(key: ApiKey, trx: Knex.Transaction): Promise<string | undefined> {
    if (key.alerts.webhookUrl === null) return undefined;
    return (await deps.alertSecrets.ensure(key.tenantId, trx)) ?? undefined;
  }

  return {
    /**
     * Issues a key; the plaintext is in the answer only (and `alertWebhookSecret`, when its
     * webhook URL generated its tenant's secret). An unknown tenant is a TenantNotFoundError.
     */
    async issue(
      tenantId: string,
      name: string,
      budgetMicros: number | null,
      limits: Partial<RateLimits> = {},
      alerts: Partial<AlertSettings> = {},
    ): Promise<{ stored: ApiKey; key: string; alertWebhookSecret?: string }> {
      const key = generateApiKey();
      const { stored, secret } = await deps.db.transaction(async (trx) => {
        const created = await deps.apiKeys.create({ id: generateApiKeyId(), tenantId, name, key, budgetMicros, limits, alerts }, trx);
        return { stored: created, secret: await secretFor(created, trx) };
      });
      return secret === undefined ? { stored, key } : { stored, key, alertWebhookSecret: secret };
    },

    /**
     * Sets the key's rate limits and alert settings (null clears a limit or the URL); the
     * limits bind its next request. New thresholds re-arm the ones its spend is below.
     */
    async update(apiKeyId: string, patch: ApiKeySettingsPatch): Promise<{ key: ApiKey; spentMicros: number; alertWebhookSecret?: string }> {
      const { key, secret } = await deps.db.transaction(async (trx) => {
        const row = await deps.apiKeys.updateSettings(apiKeyId, patch, trx);
        if (!row) throw new ApiKeyNotFoundError(apiKeyId);
        if (patch.alerts?.thresholdsPercent !== undefined && row.budgetMicros !== null) {
          await deps.alerts.rearm({ kind: AlertSubjectKind.apiKey, id: apiKeyId }, await deps.balances.keySpentMicros(row.tenantId, row.id), row.budgetMicros, trx);
        }
        return { key: row, secret: await secretFor(row, trx) };
      });
      const tenant = patch.limits !== undefined && Object.keys(patch.limits).length > 0 ? await deps.tenants.find(key.tenantId) : null;
      if (tenant) {
        await refreshApiKeyLookups(deps.redis, [key], tenant, ttlSeconds).catch((err: unknown) => {
          // Saved in PostgreSQL: the cached entry expires within its TTL and is read again.
          deps.log.warn({ err, apiKeyId }, 'API key limits saved but the key cache was not refreshed');
        });
      }
      const spentMicros = await deps.balances.keySpentMicros(key.tenantId, key.id);
      return secret === undefined ? { key, spentMicros } : { key, spentMicros, alertWebhookSecret: secret };
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
        // A revoked entry is refused whatever its limits say.
        await writeApiKeyLookup(deps.redis, revoked.keyHash, lookupEntryOf(revoked, { limits: UNLIMITED }), { ttlSeconds, onlyIfAbsent: false });
      } catch (err) {
        throw new RevocationNotCachedError('the key is revoked but its cache entry could not be updated', { cause: err });
      }
      return revoked;
    },
  };
}

export type ApiKeyService = ReturnType<typeof createApiKeyService>;
