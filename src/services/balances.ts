/**
 * Live balances for the admin views: a tenant's used and a key's spent amount, the
 * figures admission works with. The Redis counters include open reservations and are
 * the live truth while cached; when a counter is not cached, or Redis cannot be read,
 * the ledger's formula (committed amounts + pending reservations) gives the same figure.
 */
import type { Redis } from '../redis/client';
import type { BillingRepository } from '../db/billing-repository';
import type { Logger } from '../log';
import { readKeyBudget, readTenantQuota } from '../redis/quota-cache';

export interface BalancesDeps {
  redis: Redis;
  ledger: Pick<BillingRepository, 'tenantLedgerUsage' | 'apiKeyLedgerSpend'>;
  log: Pick<Logger, 'warn'>;
}

export function createBalances(deps: BalancesDeps) {
  /** The cached figure, else the ledger's; a Redis failure is logged and answered from the ledger. */
  async function liveOrLedger(cached: () => Promise<number | undefined>, ledger: () => Promise<number>, what: string, ids: Record<string, string>): Promise<number> {
    try {
      const live = await cached();
      if (live !== undefined) return live;
    } catch (err) {
      deps.log.warn({ err, ...ids }, `${what} cache unreadable; reporting the ledger's figure`);
    }
    return ledger();
  }

  return {
    /** Used quota of a tenant, reservations included. */
    tenantUsedMicros: (tenantId: string): Promise<number> =>
      liveOrLedger(
        async () => (await readTenantQuota(deps.redis, tenantId))?.usedMicros,
        () => deps.ledger.tenantLedgerUsage(tenantId),
        'tenant quota',
        { tenantId },
      ),

    /** Spent budget of an API key, reservations included. */
    keySpentMicros: (tenantId: string, apiKeyId: string): Promise<number> =>
      liveOrLedger(
        async () => (await readKeyBudget(deps.redis, tenantId, apiKeyId))?.spentMicros,
        () => deps.ledger.apiKeyLedgerSpend(apiKeyId),
        'API key budget',
        { apiKeyId },
      ),
  };
}

export type Balances = ReturnType<typeof createBalances>;
