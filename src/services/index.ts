/**
 * The account services behind the admin routes, built once on the shared repositories
 * and Redis client. (The billed-request service also needs Temporal and the relay:
 * src/api/app.ts builds it beside these.)
 */
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { Repositories } from '../db/repositories';
import type { Logger } from '../log';
import type { QuotaScripts } from '../redis/scripts';
import type { MaintenanceClient } from '../schedules/maintenance-client';
import { createApiKeyService } from './api-key-service';
import { createBalances } from './balances';
import { createTenantService } from './tenant-service';
import { createUsageService } from './usage-service';
import { createBudgetWindowAdmin, createBudgetWindows } from './budget-windows';

export interface AccountServicesDeps {
  db: Knex;
  redis: Redis;
  repositories: Repositories;
  scripts: Pick<QuotaScripts, 'raiseTenantLimit'>;
  log: Pick<Logger, 'warn'>;
  /** Starts the quota sync that follows a top-up (M4.5); absent in tests without Temporal. */
  maintenance?: Pick<MaintenanceClient, 'start'>;
}

export function createAccountServices(deps: AccountServicesDeps) {
  const { maintenance } = deps;
  const balances = createBalances({ redis: deps.redis, ledger: deps.repositories.billing, log: deps.log });
  return {
    balances,
    tenants: createTenantService({
      db: deps.db, repositories: deps.repositories, scripts: deps.scripts, redis: deps.redis, balances, log: deps.log,
      syncAfterTopUp: maintenance ? (tenantId) => maintenance.start('quota', { scope: { tenantIds: [tenantId] }, reason: 'topup' }) : undefined,
    }),
    usage: createUsageService({ repositories: deps.repositories, balances }),
    /** Budget windows of tenants and keys (docs/budget-windows.md). */
    budgetWindows: createBudgetWindowAdmin({
      db: deps.db,
      repository: deps.repositories.budgetWindows,
      windows: createBudgetWindows({ repository: deps.repositories.budgetWindows, redis: deps.redis }),
    }),
    apiKeys: createApiKeyService({
      db: deps.db,
      apiKeys: deps.repositories.apiKeys,
      alerts: deps.repositories.alerts,
      alertSecrets: deps.repositories.alertSecrets,
      tenants: deps.repositories.tenants,
      redis: deps.redis,
      balances,
      log: deps.log,
    }),
  };
}

export type AccountServices = ReturnType<typeof createAccountServices>;
