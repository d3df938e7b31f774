/**
 * Cache warm-up (M2.2): rebuilds a tenant's or key's Redis counters from
 * PostgreSQL after a miss. The used/spent figure comes from the ledger (committed
 * costs + pending reservations), the one source that knows every admission.
 * The Lua warm-up creates the hash only if it is absent, so concurrent warm-ups
 * can never overwrite each other or a live counter.
 *
 * The pending reservations counted in that figure are passed along, read in the same
 * database snapshot as the sum: the script marks their request records as counted by
 * the new hash, so settlement later refunds exactly what the counter holds, however
 * the request was admitted (Redis or the PostgreSQL fallback).
 */
import type { BillingRepository, LedgerUsageSnapshot } from '../db/billing-repository';
import type { TenantRepository } from '../db/tenant-repository';
import type { ApiKeyRepository } from '../db/api-key-repository';
import type { QuotaScripts, WarmupMarks } from './scripts';

/** The request whose settlement found the counter missing, with the final cost its ledger row now holds (0 when voided). */
export interface SettledRequest {
  requestId: string;
  costMicros: number;
}

/**
 * What the new counter holds per request: every pending reservation of the snapshot, and
 * the settled request's cost (the snapshot was read after its ledger commit). Should the
 * settled request still be pending in the snapshot, the counter holds its reservation.
 */
function marksOf(snapshot: LedgerUsageSnapshot, settled: SettledRequest | undefined): WarmupMarks {
  const stillPending = settled !== undefined && snapshot.pending.some((p) => p.requestId === settled.requestId);
  return settled === undefined || stillPending ? { pending: snapshot.pending } : { pending: snapshot.pending, settled };
}

export interface QuotaWarmupDeps {
  scripts: Pick<QuotaScripts, 'warmTenant' | 'warmKey'>;
  tenants: Pick<TenantRepository, 'find'>;
  apiKeys: Pick<ApiKeyRepository, 'findById'>;
  ledger: Pick<BillingRepository, 'tenantUsageSnapshot' | 'apiKeyUsageSnapshot'>;
}

export function createQuotaWarmup(deps: QuotaWarmupDeps) {
  return {
    /** false when the tenant does not exist. `settled`: only from a settlement, after its ledger commit. */
    async warmTenant(tenantId: string, settled?: SettledRequest): Promise<boolean> {
      const tenant = await deps.tenants.find(tenantId);
      if (!tenant) return false;
      const snapshot = await deps.ledger.tenantUsageSnapshot(tenantId);
      await deps.scripts.warmTenant(tenantId, { limitMicros: tenant.quotaLimitMicros, usedMicros: snapshot.usageMicros }, marksOf(snapshot, settled));
      return true;
    },

    /** false when the key does not exist, is revoked, or belongs to another tenant. `settled` as for warmTenant. */
    async warmKey(tenantId: string, apiKeyId: string, settled?: SettledRequest): Promise<boolean> {
      const key = await deps.apiKeys.findById(apiKeyId);
      if (!key || key.tenantId !== tenantId || key.status !== 'active') return false;
      const snapshot = await deps.ledger.apiKeyUsageSnapshot(apiKeyId);
      await deps.scripts.warmKey(tenantId, apiKeyId, { budgetMicros: key.budgetMicros, spentMicros: snapshot.usageMicros }, marksOf(snapshot, settled));
      return true;
    },
  };
}

export type QuotaWarmup = ReturnType<typeof createQuotaWarmup>;
