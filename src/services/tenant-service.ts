/**
 * Tenants: creation, their live balance, top-ups and their ledger listing.
 *
 * A top-up credits a tenant once per reference. The ledger row and the limit raise
 * commit together; the ledger's UNIQUE request id makes a repeated or concurrent
 * reference a no-op. The cached limit is raised afterwards to the committed
 * PostgreSQL limit with max() semantics, so out-of-order Redis calls still end at
 * the exact sum.
 */
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import type { Repositories } from '../db/repositories';
import { LedgerRequestConflictError, TransactionKind, type LedgerPage } from '../db/ledger-types';
import { TenantNotFoundError, type NewTenant, type Tenant } from '../db/tenant-repository';
import type { Logger } from '../log';
import type { RateLimits } from '../edge/limits';
import { API_KEY_LOOKUP_TTL_SECONDS, refreshApiKeyLookups } from '../redis/api-key-cache';
import type { QuotaScripts } from '../redis/scripts';
import type { Balances } from './balances';

/** A tenant with its live usage: what admission sees. */
export interface TenantBalance extends Tenant {
  usedMicros: number;
  remainingMicros: number;
}

/** Thrown when a top-up reference was already used for another amount: crediting it again would credit twice. */
export class TopUpReferenceConflictError extends Error {
  override name = 'TopUpReferenceConflictError';

  constructor(
    readonly reference: string,
    /** The amount first credited under this reference; undefined when the request id belongs to another kind of entry. */
    readonly creditedMicros?: number,
  ) {
    super(`top-up reference ${reference} is already used`);
  }
}

/** The ledger request id of a top-up: one per (tenant, reference), which makes top-ups idempotent. */
export function topUpRequestId(tenantId: string, reference: string): string {
  return `topup:${tenantId}:${reference}`;
}

export interface TenantServiceDeps {
  db: Knex;
  repositories: Pick<Repositories, 'tenants' | 'billing' | 'apiKeys'>;
  scripts: Pick<QuotaScripts, 'raiseTenantLimit'>;
  /** Rewrites cached API-key lookups when the tenant's limits change. */
  redis: Pick<Redis, 'set'>;
  balances: Pick<Balances, 'tenantUsedMicros'>;
  log: Pick<Logger, 'warn'>;
  /** Runs a quota sync of the tenant after a top-up (M4.5), so tenant_quota shows the new state at once. */
  syncAfterTopUp?: (tenantId: string) => Promise<unknown>;
}

export function createTenantService(deps: TenantServiceDeps) {
  const { tenants, billing } = deps.repositories;

  async function withBalance(tenant: Tenant): Promise<TenantBalance> {
    const usedMicros = await deps.balances.tenantUsedMicros(tenant.tenantId);
    return { ...tenant, usedMicros, remainingMicros: tenant.quotaLimitMicros - usedMicros };
  }

  async function require(tenantId: string, trx?: Knex.Transaction): Promise<Tenant> {
    const tenant = await tenants.find(tenantId, trx);
    if (!tenant) throw new TenantNotFoundError(tenantId);
    return tenant;
  }

  return {
    /** A taken id is a TenantAlreadyExistsError. */
    create: async (tenant: NewTenant): Promise<TenantBalance> => withBalance(await tenants.create(tenant)),

    get: async (tenantId: string): Promise<TenantBalance> => withBalance(await require(tenantId)),

    /** Sets the tenant's rate limits (null clears one); they bind the next request of every key of the tenant. */
    async updateLimits(tenantId: string, patch: Partial<RateLimits>): Promise<TenantBalance> {
      const tenant = await tenants.updateLimits(tenantId, patch);
      if (!tenant) throw new TenantNotFoundError(tenantId);
      try {
        await refreshApiKeyLookups(deps.redis, await deps.repositories.apiKeys.listByTenant(tenantId), tenant, API_KEY_LOOKUP_TTL_SECONDS);
      } catch (err) {
        // Saved in PostgreSQL: cached lookups expire within their TTL and are read again.
        deps.log.warn({ err, tenantId }, 'tenant limits saved but the key cache was not refreshed');
      }
      return withBalance(tenant);
    },

    /** Credits `amountMicros` once per reference; `created` is false for a repeated reference. */
    async topUp(tenantId: string, amountMicros: number, reference: string): Promise<{ created: boolean; tenant: TenantBalance }> {
      const created = await deps.db.transaction(async (trx) => {
        await require(tenantId, trx);
        const recorded = await billing
          .recordTransaction({ requestId: topUpRequestId(tenantId, reference), tenantId, kind: TransactionKind.topup, amountMicros }, trx)
          .catch((err: unknown) => {
            throw err instanceof LedgerRequestConflictError ? new TopUpReferenceConflictError(reference) : err;
          });
        if (!recorded.created) {
          if (recorded.entry.amountMicros !== amountMicros) throw new TopUpReferenceConflictError(reference, recorded.entry.amountMicros ?? undefined);
          return false;
        }
        await tenants.raiseLimit(tenantId, amountMicros, trx);
        return true;
      });
      // Read after commit: it includes every top-up committed so far, ours and concurrent ones.
      const tenant = await require(tenantId);
      try {
        await deps.scripts.raiseTenantLimit(tenantId, tenant.quotaLimitMicros);
      } catch (err) {
        // The credit is committed: failing here could make the caller retry with a new
        // reference and credit twice. A lower cached limit only denies early (never
        // overspends); the same reference again raises it.
        deps.log.warn({ err, tenantId }, 'top-up committed but the cached quota limit was not raised');
      }
      // Not awaited by the caller's money: the credit is committed, and the next scheduled sync catches up if this fails.
      if (created && deps.syncAfterTopUp) {
        deps.syncAfterTopUp(tenantId).catch((err: unknown) => deps.log.warn({ err: (err as Error).message, tenantId }, 'could not start the quota sync after a top-up'));
      }
      return { created, tenant: await withBalance(tenant) };
    },

    /** The tenant's ledger, newest first; an unknown tenant is a TenantNotFoundError. */
    async transactions(tenantId: string, page: { limit: number; cursor: string | null }): Promise<LedgerPage> {
      await require(tenantId);
      return billing.listTenantTransactions(tenantId, page);
    },
  };
}

export type TenantService = ReturnType<typeof createTenantService>;
