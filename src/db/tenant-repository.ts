/**
 * Tenants and their quota limits (tenant_quota, M1.1). The cached copy of a raised
 * limit is Redis' business (QuotaScripts.raiseTenantLimit, called by the tenant service).
 *
 * PostgreSQL owns the limit. It only ever grows here (top-ups), and every raise is a
 * single `UPDATE ... SET quota_limit_micros = quota_limit_micros + amount`, so
 * concurrent top-ups serialise on the row lock and none is lost.
 */
import type { Knex } from 'knex';
import type { RateLimits } from '../edge/limits';
import { safeInteger } from './ledger-types';
import { rateLimitColumns, toRateLimits, type RateLimitRow } from './rate-limit-columns';
import { alertColumns, toAlertSettings, type AlertSettingsRow } from './alert-columns';
import type { AlertSettings } from '../alerts/alert-settings';

/** A tenant as the application sees it; money in integer micros. */
export interface Tenant {
  tenantId: string;
  name: string;
  quotaLimitMicros: number;
  /** The used amount last synced from Redis (M4.1); the live figure is in Redis. */
  syncedUsedMicros: number;
  syncedAt: Date | null;
  /** Edge rate limits of the whole tenant (each of its keys is bound by them too). */
  limits: RateLimits;
  /** Budget alerts on the tenant quota (its keys alert to this URL unless they have their own). */
  alerts: AlertSettings;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewTenant {
  tenantId: string;
  name: string;
  quotaLimitMicros: number;
  /** @default UNLIMITED */
  limits?: Partial<RateLimits>;
  /** @default no webhook, thresholds 80 and 100 */
  alerts?: Partial<AlertSettings>;
}

/** What a PATCH of a tenant may set; absent fields stay as they are. */
export interface TenantSettingsPatch {
  limits?: Partial<RateLimits>;
  alerts?: Partial<AlertSettings>;
}

/** The raw tenant_quota row (BIGINT columns as text). */
interface TenantQuotaRow extends RateLimitRow, AlertSettingsRow {
  tenant_id: string;
  name: string;
  quota_limit_micros: string;
  used_micros: string;
  synced_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

/** Thrown when a tenant is created with an id that already exists. */
export class TenantAlreadyExistsError extends Error {
  override name = 'TenantAlreadyExistsError';

  constructor(readonly tenantId: string) {
    super(`Tenant ${tenantId} already exists`);
  }
}

/** Thrown when an operation addresses a tenant that does not exist. */
export class TenantNotFoundError extends Error {
  override name = 'TenantNotFoundError';

  constructor(readonly tenantId: string) {
    super(`Tenant ${tenantId} not found`);
  }
}

/** Thrown when raising a limit would pass Number.MAX_SAFE_INTEGER micros (it could no longer be counted exactly). */
export class QuotaLimitOverflowError extends Error {
  override name = 'QuotaLimitOverflowError';

  constructor(
    readonly tenantId: string,
    readonly amountMicros: number,
  ) {
    super(`Raising the quota limit of tenant ${tenantId} by ${amountMicros} micros would exceed ${Number.MAX_SAFE_INTEGER} micros`);
  }
}

/** Thrown when an amount given to the tenant repository is not a safe integer in range. */
export class InvalidQuotaAmountError extends Error {
  override name = 'InvalidQuotaAmountError';

  constructor(
    readonly field: string,
    readonly value: unknown,
    requirement: string,
  ) {
    super(`${field} must be ${requirement}, got ${String(value)}`);
  }
}

function toTenant(row: TenantQuotaRow): Tenant {
  return {
    tenantId: row.tenant_id,
    name: row.name,
    quotaLimitMicros: safeInteger('quota_limit_micros', row.quota_limit_micros),
    syncedUsedMicros: safeInteger('used_micros', row.used_micros),
    syncedAt: row.synced_at,
    limits: toRateLimits(row),
    alerts: toAlertSettings(row),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

export function createTenantRepository(db: Knex) {
  /** Sets rate limits and alert settings in one UPDATE; the tenant after the change, or null when it does not exist. */
  async function updateSettings(tenantId: string, patch: TenantSettingsPatch, trx?: Knex.Transaction): Promise<Tenant | null> {
    const q = trx ?? db;
    const rows = await q<TenantQuotaRow>('tenant_quota')
      .where({ tenant_id: tenantId })
      .update({ ...rateLimitColumns(patch.limits ?? {}), ...alertColumns(patch.alerts ?? {}), updated_at: q.fn.now() })
      .returning('*');
    const row = rows[0];
    return row ? toTenant(row) : null;
  }

  return {
    updateSettings,
    /** Inserts a tenant; a taken id is a TenantAlreadyExistsError (also under a concurrent create). */
    async create(tenant: NewTenant, trx?: Knex.Transaction): Promise<Tenant> {
      const limit = tenant.quotaLimitMicros;
      if (!Number.isSafeInteger(limit) || limit < 0) {
        throw new InvalidQuotaAmountError('quotaLimitMicros', limit, 'a non-negative safe integer');
      }
      const rows = await (trx ?? db)<TenantQuotaRow>('tenant_quota')
        .insert({ tenant_id: tenant.tenantId, name: tenant.name, quota_limit_micros: String(limit), ...rateLimitColumns(tenant.limits ?? {}), ...alertColumns(tenant.alerts ?? {}) })
        .onConflict('tenant_id')
        .ignore()
        .returning('*');
      const row = rows[0];
      if (!row) throw new TenantAlreadyExistsError(tenant.tenantId);
      return toTenant(row);
    },

    async find(tenantId: string, trx?: Knex.Transaction): Promise<Tenant | null> {
      const row = await (trx ?? db)<TenantQuotaRow>('tenant_quota').where({ tenant_id: tenantId }).first();
      return row ? toTenant(row) : null;
    },

    /**
     * Adds amountMicros to the tenant's limit and returns the new limit. The overflow
     * guard is part of the UPDATE's WHERE, so an overflowing raise changes nothing even
     * outside a transaction.
     */
    async raiseLimit(tenantId: string, amountMicros: number, trx?: Knex.Transaction): Promise<number> {
      if (!Number.isSafeInteger(amountMicros) || amountMicros <= 0) {
        throw new InvalidQuotaAmountError('amountMicros', amountMicros, 'a positive safe integer');
      }
      const q = trx ?? db;
      const rows = await q<TenantQuotaRow>('tenant_quota')
        .where({ tenant_id: tenantId })
        .andWhere('quota_limit_micros', '<=', String(Number.MAX_SAFE_INTEGER - amountMicros))
        .update({ quota_limit_micros: q.raw('quota_limit_micros + ?::bigint', [String(amountMicros)]), updated_at: q.fn.now() })
        .returning('quota_limit_micros');
      const row = rows[0];
      if (row) return safeInteger('quota_limit_micros', row.quota_limit_micros);
      const exists = await q<TenantQuotaRow>('tenant_quota').where({ tenant_id: tenantId }).first('tenant_id');
      if (exists) throw new QuotaLimitOverflowError(tenantId, amountMicros);
      throw new TenantNotFoundError(tenantId);
    },
  };
}

export type TenantRepository = ReturnType<typeof createTenantRepository>;
