/**
 * The admin API (docs/architecture.md, admin side of the HTTP contract): every route
 * under /admin needs `Authorization: Bearer <ADMIN_TOKEN>`. JSON is snake_case, money is
 * integer `*_micros`, bodies and queries are validated with zod at the edge, and
 * errors reach the client through errorMiddleware in the OpenAI error shape.
 *
 * The token check is scoped to /admin, so other routers mounted on the same app are
 * never affected.
 */
import { Router } from 'express';
import type { Config } from '../../config';
import type { Repositories } from '../../db/repositories';
import type { Logger } from '../../log';
import type { ApiKeyService } from '../../services/api-key-service';
import type { PriceList } from '../../services/price-list';
import type { TenantService } from '../../services/tenant-service';
import type { BudgetWindowAdmin } from '../../services/budget-windows';
import { adminAuth } from '../auth';
import { adminApiKeyRoutes } from './admin-api-keys';
import { adminConsistencyRoutes } from './admin-consistency';
import { adminExportRoutes } from './admin-exports';
import { adminModelRoutes } from './admin-models';
import { adminRequestRoutes, type DescribeWorkflow } from './admin-requests';
import { adminTenantRoutes } from './admin-tenants';
import { adminSyncRoutes } from './admin-sync';
import { adminUsageRoutes } from './admin-usage';
import { adminLockRoutes } from './admin-locks';
import { adminChannelRoutes } from './admin-channels';
import type { DistributedLock } from '../../locks/distributed-lock';
import type { UsageService } from '../../services/usage-service';
import type { MaintenanceClient } from '../../schedules/maintenance-client';

export interface AdminRouterDeps {
  tenants: TenantService;
  apiKeys: ApiKeyService;
  usage: UsageService;
  /** Budget windows on the tenant and key routes (docs/budget-windows.md). */
  budgetWindows: BudgetWindowAdmin;
  /** The price list the gateway reads (PUT /admin/models writes through it). */
  prices: Pick<PriceList, 'upsert'>;
  repositories: Pick<Repositories, 'billing' | 'consistencyReports' | 'channels'> & Partial<Pick<Repositories, 'usageExport' | 'usageExportSettings' | 'modelPrices'>>;
  /** The settings, for the usage export's environment-configured destinations (GET /admin/exports/:destination). */
  config?: Readonly<Config>;
  logger: Pick<Logger, 'warn' | 'info'>;
  /** The config's ADMIN_TOKEN. */
  adminToken: string;
  /** Workflow status for GET /admin/requests/:id; without it the status is null. */
  describeWorkflow?: DescribeWorkflow;
  /** Starts maintenance jobs for POST /admin/sync/:job; without it that route answers 404. */
  maintenance?: MaintenanceClient;
  /** Conversation locks for GET|DELETE /admin/locks/:conversation_id; without it those routes answer 404. */
  locks?: Pick<DistributedLock, 'inspect' | 'forceRelease'>;
}

export function adminRouter(deps: AdminRouterDeps): Router {
  const admin = Router();
  admin.use(
    adminTenantRoutes(deps.tenants, deps.budgetWindows),
    adminApiKeyRoutes(deps.apiKeys, deps.budgetWindows),
    adminModelRoutes(deps.prices, deps.repositories.modelPrices),
    adminUsageRoutes(deps.usage),
    adminRequestRoutes({ ledger: deps.repositories.billing, logger: deps.logger, describeWorkflow: deps.describeWorkflow }),
    adminConsistencyRoutes({ reports: deps.repositories.consistencyReports }),
    adminChannelRoutes({ channels: deps.repositories.channels, logger: deps.logger }),
  );
  if (deps.repositories.usageExport) admin.use(adminExportRoutes({ exports: deps.repositories.usageExport, settings: deps.repositories.usageExportSettings, config: deps.config }));
  if (deps.maintenance) admin.use(adminSyncRoutes({ maintenance: deps.maintenance, logger: deps.logger }));
  if (deps.locks) admin.use(adminLockRoutes({ locks: deps.locks, logger: deps.logger }));
  const router = Router();
  router.use('/admin', adminAuth(deps.adminToken), admin);
  return router;
}
