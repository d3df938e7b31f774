/**
 * API keys (api_key_quota, M1.1). A key is shown to the admin once and stored only
 * as its SHA-256 hex digest plus a short display prefix: a database dump or a log
 * line never holds a usable key. Lookups by key go through the digest.
 *
 * A plain (unsalted) SHA-256 is enough here because keys carry 256 random bits:
 * there is no dictionary to precompute, unlike passwords.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { RateLimits } from '../edge/limits';
import { safeInteger } from './ledger-types';
import { rateLimitColumns, toRateLimits, type RateLimitRow } from './rate-limit-columns';
import { alertColumns, toAlertSettings, type AlertSettingsRow } from './alert-columns';
import type { AlertSettings } from '../alerts/alert-settings';
import { TenantNotFoundError } from './tenant-repository';

/** Length of the key prefix kept for display ("sk-bq-Ab"); short enough to be useless to an attacker. */
export const KEY_PREFIX_LENGTH = 8;

/** A key's lifecycle; revocation is final. */
export const ApiKeyStatus = {
  active: 'active',
  revoked: 'revoked',
} as const;
export type ApiKeyStatus = (typeof ApiKeyStatus)[keyof typeof ApiKeyStatus];

/** An API key as the application sees it (never the key itself); money in integer micros. */
export interface ApiKey {
  id: string;
  tenantId: string;
  name: string;
  keyHash: string;
  keyPrefix: string;
  /** null = no budget of its own (the tenant quota still applies). */
  budgetMicros: number | null;
  /** The spent amount last synced from Redis (M4.2); the live figure is in Redis. */
  syncedSpentMicros: number;
  status: ApiKeyStatus;
  /** Edge rate limits of this key (its tenant's apply too). */
  limits: RateLimits;
  /** Budget alerts on the key budget; a null URL alerts to the tenant's. */
  alerts: AlertSettings;
  revokedAt: Date | null;
  createdAt: Date;
}

export interface NewApiKey {
  id: string;
  tenantId: string;
  name: string;
  /** The plaintext key: hashed here, never stored. */
  key: string;
  budgetMicros: number | null;
  /** @default UNLIMITED */
  limits?: Partial<RateLimits>;
  /** @default the tenant's webhook, thresholds 80 and 100 */
  alerts?: Partial<AlertSettings>;
}

/** What a PATCH of a key may set; absent fields stay as they are. */
export interface ApiKeySettingsPatch {
  limits?: Partial<RateLimits>;
  alerts?: Partial<AlertSettings>;
}

interface ApiKeyRow extends RateLimitRow, AlertSettingsRow {
  id: string;
  tenant_id: string;
  name: string;
  key_hash: string;
  key_prefix: string;
  budget_micros: string | null;
  spent_micros: string;
  status: string;
  revoked_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** Thrown when a row holds a status outside ApiKeyStatus (the table's CHECK was bypassed). */
export class UnexpectedApiKeyStatusError extends Error {
  override name = 'UnexpectedApiKeyStatusError';

  constructor(readonly status: unknown) {
    super(`api_key_quota.status holds unexpected value ${String(status)}`);
  }
}

/** Thrown when a key budget is not a non-negative safe integer (money is integer micros). */
export class InvalidKeyBudgetError extends Error {
  override name = 'InvalidKeyBudgetError';

  constructor(readonly value: unknown) {
    super(`budgetMicros must be null or a non-negative safe integer, got ${String(value)}`);
  }
}

/** The stored form of a key: lowercase SHA-256 hex of its UTF-8 bytes. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

function toStatus(value: string): ApiKeyStatus {
  if (value === ApiKeyStatus.active || value === ApiKeyStatus.revoked) return value;
  throw new UnexpectedApiKeyStatusError(value);
}

function toApiKey(row: ApiKeyRow): ApiKey {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    name: row.name,
    keyHash: row.key_hash,
    keyPrefix: row.key_prefix,
    budgetMicros: row.budget_micros === null ? null : safeInteger('budget_micros', row.budget_micros),
    syncedSpentMicros: safeInteger('spent_micros', row.spent_micros),
    status: toStatus(row.status),
    limits: toRateLimits(row),
    alerts: toAlertSettings(row),
    revokedAt: row.revoked_at,
    createdAt: row.created_at,
  };
}

/** PostgreSQL's foreign_key_violation: here, the tenant does not exist. */
function isForeignKeyViolation(err: unknown): boolean {
  return err instanceof Error && (err as Error & { code?: unknown }).code === '23503';
}

export function createApiKeyRepository(db: Knex) {
  /** Sets rate limits and alert settings in one UPDATE; the key after the change, or null when no key has this id. */
  async function updateSettings(id: string, patch: ApiKeySettingsPatch, trx?: Knex.Transaction): Promise<ApiKey | null> {
    const q = trx ?? db;
    const rows = await q<ApiKeyRow>('api_key_quota')
      .where({ id })
      .update({ ...rateLimitColumns(patch.limits ?? {}), ...alertColumns(patch.alerts ?? {}), updated_at: q.fn.now() })
      .returning('*');
    const row = rows[0];
    return row ? toApiKey(row) : null;
  }

  return {
    updateSettings,
    /** Stores a new key hashed; an unknown tenant is a TenantNotFoundError. */
    async create(input: NewApiKey, trx?: Knex.Transaction): Promise<ApiKey> {
      const budget = input.budgetMicros;
      if (budget !== null && (!Number.isSafeInteger(budget) || budget < 0)) throw new InvalidKeyBudgetError(budget);
      try {
        const rows = await (trx ?? db)<ApiKeyRow>('api_key_quota')
          .insert({
            id: input.id,
            tenant_id: input.tenantId,
            name: input.name,
            key_hash: hashApiKey(input.key),
            key_prefix: input.key.slice(0, KEY_PREFIX_LENGTH),
            budget_micros: budget === null ? null : String(budget),
            status: ApiKeyStatus.active,
            ...rateLimitColumns(input.limits ?? {}),
            ...alertColumns(input.alerts ?? {}),
          })
          .returning('*');
        const row = rows[0];
        if (!row) throw new Error('INSERT ... RETURNING returned no row');
        return toApiKey(row);
      } catch (err) {
        if (isForeignKeyViolation(err)) throw new TenantNotFoundError(input.tenantId);
        throw err;
      }
    },

    async findById(id: string, trx?: Knex.Transaction): Promise<ApiKey | null> {
      const row = await (trx ?? db)<ApiKeyRow>('api_key_quota').where({ id }).first();
      return row ? toApiKey(row) : null;
    },

    /** The authenticator's lookup: by the digest, so the key itself never reaches SQL. */
    async findByHash(keyHash: string, trx?: Knex.Transaction): Promise<ApiKey | null> {
      const row = await (trx ?? db)<ApiKeyRow>('api_key_quota').where({ key_hash: keyHash }).first();
      return row ? toApiKey(row) : null;
    },

    /** Every key of a tenant (to refresh their lookup entries when the tenant's limits change). */
    async listByTenant(tenantId: string, trx?: Knex.Transaction): Promise<ApiKey[]> {
      const rows = await (trx ?? db)<ApiKeyRow>('api_key_quota').where({ tenant_id: tenantId }).orderBy('id');
      return rows.map(toApiKey);
    },

    /**
     * Revokes a key; idempotent (a second call keeps the first revoked_at). Returns the
     * revoked key, or null when no key has this id.
     */
    async revoke(id: string, trx?: Knex.Transaction): Promise<ApiKey | null> {
      const q = trx ?? db;
      const rows = await q<ApiKeyRow>('api_key_quota')
        .where({ id })
        .update({ status: ApiKeyStatus.revoked, revoked_at: q.raw('coalesce(revoked_at, now())'), updated_at: q.fn.now() })
        .returning('*');
      const row = rows[0];
      return row ? toApiKey(row) : null;
    },
  };
}

export type ApiKeyRepository = ReturnType<typeof createApiKeyRepository>;
