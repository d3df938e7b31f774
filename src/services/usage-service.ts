/**
 * What tenants and finance teams read about spend (issue 12): reports over the ledger for
 * admins, and a key's own money in OpenAI's legacy dashboard shapes.
 *
 * The "account" a key spends from is its own budget when it has one, else its tenant's
 * quota: the legacy balance (hard limit) and usage a client sees both describe that account,
 * so `hard_limit - total_usage` is the balance a one-api/new-api client computes. A key only
 * ever sees its own tenant: the subject comes from its authenticated credentials.
 */
import type { Repositories } from '../db/repositories';
import { TenantNotFoundError } from '../db/tenant-repository';
import type { DailyModelCost, UsageGroupBy, UsageRow } from '../db/usage-report-repository';
import type { Balances } from './balances';
import { ApiKeyNotFoundError } from './api-key-service';

export interface UsageWindow {
  from: Date;
  to: Date;
  groupBy: UsageGroupBy;
}

/** A key's account: its budget, else its tenant's quota; money in integer micros, live (reservations included). */
export interface KeyAccount {
  scope: 'api_key' | 'tenant';
  limitMicros: number;
  usedMicros: number;
  remainingMicros: number;
}

export interface UsageServiceDeps {
  repositories: Pick<Repositories, 'usageReports' | 'tenants' | 'apiKeys'>;
  balances: Pick<Balances, 'tenantUsedMicros' | 'keySpentMicros'>;
}

export function createUsageService(deps: UsageServiceDeps) {
  const { usageReports, tenants, apiKeys } = deps.repositories;

  async function requireKey(apiKeyId: string) {
    const key = await apiKeys.findById(apiKeyId);
    if (!key) throw new ApiKeyNotFoundError(apiKeyId);
    return key;
  }

  async function account(tenantId: string, apiKeyId: string): Promise<KeyAccount> {
    const key = await requireKey(apiKeyId);
    if (key.budgetMicros !== null) {
      const used = await deps.balances.keySpentMicros(tenantId, apiKeyId);
      return { scope: 'api_key', limitMicros: key.budgetMicros, usedMicros: used, remainingMicros: key.budgetMicros - used };
    }
    const tenant = await tenants.find(tenantId);
    if (!tenant) throw new TenantNotFoundError(tenantId);
    const used = await deps.balances.tenantUsedMicros(tenantId);
    return { scope: 'tenant', limitMicros: tenant.quotaLimitMicros, usedMicros: used, remainingMicros: tenant.quotaLimitMicros - used };
  }

  return {
    /** GET /admin/tenants/:id/usage; an unknown tenant is TenantNotFoundError. */
    async tenantUsage(tenantId: string, window: UsageWindow): Promise<UsageRow[]> {
      if (!(await tenants.find(tenantId))) throw new TenantNotFoundError(tenantId);
      return usageReports.usage({ tenantId, ...window });
    },

    /** GET /admin/api-keys/:id/usage; an unknown key is ApiKeyNotFoundError. */
    async keyUsage(apiKeyId: string, window: UsageWindow): Promise<UsageRow[]> {
      await requireKey(apiKeyId);
      return usageReports.usage({ apiKeyId, ...window });
    },

    /** The authenticated key's account (GET /v1/dashboard/billing/subscription). */
    account,

    /** Cost per day and model of the key's account in [from, to) (GET /v1/dashboard/billing/usage). */
    async accountDailyCosts(tenantId: string, apiKeyId: string, from: Date, to: Date): Promise<DailyModelCost[]> {
      const { scope } = await account(tenantId, apiKeyId);
      return usageReports.dailyCostsByModel(scope === 'api_key' ? { apiKeyId } : { tenantId }, from, to);
    },
  };
}

export type UsageService = ReturnType<typeof createUsageService>;
