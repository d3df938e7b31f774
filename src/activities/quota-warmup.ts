/**
 * Cache warm-up (M2.2): rebuilds a tenant's or key's Redis counters from
 * PostgreSQL after a miss. The used/spent figure comes from the ledger (committed
 * costs + pending reservations), the one source that knows every admission.
 * The Lua warm-up creates the hash only if it is absent, so concurrent warm-ups
 * can never overwrite each other or a live counter.
 */
import type { BillingRepository } from '../db/billing-repository';
import type { TenantRepository } from '../db/tenant-repository';
import type { ApiKeyRepository } from '../db/api-key-repository';
import type { QuotaScripts } from '../redis/scripts';

export interface QuotaWarmupDeps {
  scripts: Pick<QuotaScripts, 'warmTenant' | 'warmKey'>;
  tenants: Pick<TenantRepository, 'find'>;
  apiKeys: Pick<ApiKeyRepository, 'findById'>;
  ledger: Pick<BillingRepository, 'tenantLedgerUsage' | 'apiKeyLedgerSpend'>;
}

export function createQuotaWarmup(deps: QuotaWarmupDeps) {
  return {
    /** false when the tenant does not exist. */
    async warmTenant(tenantId: string): Promise<boolean> {
      const tenant = await deps.tenants.find(tenantId);
      if (!tenant) return false;
      const usedMicros = await deps.ledger.tenantLedgerUsage(tenantId);
      await deps.scripts.warmTenant(tenantId, { limitMicros: tenant.quotaLimitMicros, usedMicros });
      return true;
    },

    /** false when the key does not exist, is revoked, or belongs to another tenant. */
    async warmKey(tenantId: string, apiKeyId: string): Promise<boolean> {
      const key = await deps.apiKeys.findById(apiKeyId);
      if (!key || key.tenantId !== tenantId || key.status !== 'active') return false;
      const spentMicros = await deps.ledger.apiKeyLedgerSpend(apiKeyId);
      await deps.scripts.warmKey(tenantId, apiKeyId, { budgetMicros: key.budgetMicros, spentMicros });
      return true;
    },
  };
}

export type QuotaWarmup = ReturnType<typeof createQuotaWarmup>;
