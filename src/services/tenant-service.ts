/**
 * Tenants: creation, their live balance, top-ups and their ledger listing.
 *
 * A top-up credits a tenant once per reference. The ledger row and the limit raise
 * commit together; the ledger's UNIQUE request id makes a repeated or concurrent
 * reference a no-op. The cached limit is raised afterwards to the committed
 * PostgreSQL limit with max() semantics, so out-of-order Redis calls still end at
 * the exact sum. In the same transaction, the tenant's budget alerts whose thresholds
 * usage is below again are re-armed (src/alerts/budget-alerts.ts).
 *
 * Alert settings: the first webhook URL a tenant gets also gives it a signing secret,
 * returned once in that answer (`alertWebhookSecret`); rotateAlertSecret replaces it.
 */
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { Repositories } from '../db/repositories';
import { LedgerRequestConflictError, TransactionKind, type LedgerPage } from '../db/ledger-types';
import { TenantNotFoundError, type NewTenant, type Tenant, type TenantSettingsPatch } from '../db/tenant-repository';
import { AlertSubjectKind } from '../workflows/budget-alert-definitions';
import type { Logger } from '../log';
import { API_KEY_LOOKUP_TTL_SECONDS, refreshApiKeyLookups } from '../redis/api-key-cache';
import type { QuotaScripts } from '../redis/scripts';
import type { Balances } from './balances';

/** A tenant with its live usage: what admission sees. */
export interface TenantBalance extends Tenant {
  usedMicros: number;
  remainingMicros: number;
}

/** A tenant written by create or update; `alertWebhookSecret` only when this call generated it (show it once). */
export interface TenantWritten extends TenantBalance {
  alertWebhookSecret?: string;
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
  repositories: Pick<Repositories, 'tenants' | 'billing' | 'apiKeys' | 'alerts' | 'alertSecrets'>;
  scripts: Pick<QuotaScripts, 'raiseTenantLimit'>;
  /** Rewrites cached API-key lookups when the tenant's limits change. */
  redis: Pick<Redis, 'set'>;
  balances: Pick<Balances, 'tenantUsedMicros'>;
  log: Pick<Logger, 'warn'>;
  /** Runs a quota sync of the tenant after a top-up (M4.5), so tenant_quota shows the new state at once. */
  syncAfterTopUp?: (tenantId: string) => Promise<unknown>;
}

export function createTenantService(deps: TenantServiceDeps) {
  const { tenants, billing, alerts, alertSecrets } = deps.repositories;

  async function withBalance(tenant: Tenant): Promise<TenantBalance> {
    const usedMicros = await deps.balances.tenantUsedMicros(tenant.tenantId);
    return { ...tenant, usedMicros, remainingMicros: tenant.quotaLimitMicros - usedMicros };
  }

  async function require(tenantId: string, trx?: Knex.Transaction): Promise<Tenant> {
    const tenant = await tenants.find(tenantId, trx);
    if (!tenant) throw new TenantNotFoundError(tenantId);
    return tenant;
  }

  /** A tenant with a webhook URL gets a signing secret, in the same transaction; the new secret when created now. */
  async function secretFor(tenant: Tenant, trx: Knex.Transaction): Promise<string | undefined> {
    if (tenant.alerts.webhookUrl === null) return undefined;
    return (await alertSecrets.ensure(tenant.tenantId, trx)) ?? undefined;
  }

  function written(balance: TenantBalance, secret: string | undefined): TenantWritten {
    return secret === undefined ? balance : { ...balance, alertWebhookSecret: secret };
  }

  return {
    /** A taken id is a TenantAlreadyExistsError. */
    async create(tenant: NewTenant): Promise<TenantWritten> {
      const { created, secret } = await deps.db.transaction(async (trx) => {
        const row = await tenants.create(tenant, trx);
        return { created: row, secret: await secretFor(row, trx) };
      });
      return written(await withBalance(created), secret);
    },

    get: async (tenantId: string): Promise<TenantBalance> => withBalance(await require(tenantId)),

    /**
     * Sets rate limits and alert settings (null clears a limit or the URL). The limits bind
     * the next request of every key of the tenant. New thresholds re-arm the ones usage is
     * below. A first webhook URL generates the signing secret.
     */
    async update(tenantId: string, patch: TenantSettingsPatch): Promise<TenantWritten> {
      const { tenant, secret } = await deps.db.transaction(async (trx) => {
        const row = await tenants.updateSettings(tenantId, patch, trx);
        if (!row) throw new TenantNotFoundError(tenantId);
        if (patch.alerts?.thresholdsPercent !== undefined) {
          await alerts.rearm({ kind: AlertSubjectKind.tenant, id: tenantId }, await deps.balances.tenantUsedMicros(tenantId), row.quotaLimitMicros, trx);
        }
        return { tenant: row, secret: await secretFor(row, trx) };
      });
      if (patch.limits !== undefined && Object.keys(patch.limits).length > 0) {
        try {
          await refreshApiKeyLookups(deps.redis, await deps.repositories.apiKeys.listByTenant(tenantId), tenant, API_KEY_LOOKUP_TTL_SECONDS);
        } catch (err) {
          // Saved in PostgreSQL: cached lookups expire within their TTL and are read again.
          deps.log.warn({ err, tenantId }, 'tenant limits saved but the key cache was not refreshed');
        }
      }
      return written(await withBalance(tenant), secret);
    },

    /** Replaces the tenant's webhook signing secret; the new one (shown once). Retries still in flight sign with it. */
    async rotateAlertSecret(tenantId: string): Promise<string> {
      const secret = await alertSecrets.rotate(tenantId);
      if (secret === null) throw new TenantNotFoundError(tenantId);
      return secret;
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
        const limitMicros = await tenants.raiseLimit(tenantId, amountMicros, trx);
        // Back below a threshold: its alert is armed again, committed with the credit.
        await alerts.rearm({ kind: AlertSubjectKind.tenant, id: tenantId }, await deps.balances.tenantUsedMicros(tenantId), limitMicros, trx);
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
