/**
 * The admin API (ARCHITECTURE.md, admin side of the HTTP contract): every route under
 * /admin needs `Authorization: Bearer <ADMIN_TOKEN>`. JSON is snake_case, money is
 * integer `*_micros`, bodies and queries are validated with zod at the edge, and
 * errors reach the client through errorMiddleware in the OpenAI error shape.
 *
 * Mount with `app.use(express.json(...), adminRouter(deps), ..., errorMiddleware(logger))`.
 * The token check is scoped to /admin, so other routers mounted on the same app are
 * never affected.
 */
import { Router } from 'express';
import type { Knex } from 'knex';
import type { Redis } from 'ioredis';
import type { Logger } from '../../log';
import { createApiKeyRepository, type ApiKeyRepository } from '../../db/api-key-repository';
import { createBillingRepository, type BillingRepository } from '../../db/billing-repository';
import { createModelPriceRepository, type ModelPriceRepository } from '../../db/model-price-repository';
import { createTenantRepository, type TenantRepository } from '../../db/tenant-repository';
import { API_KEY_LOOKUP_TTL_SECONDS, adminAuth } from '../auth';
import { adminApiKeyRoutes } from './admin-api-keys';
import { adminRequestRoutes, type DescribeWorkflow } from './admin-requests';
import { adminModelRoutes } from './admin-models';
import { adminTenantRoutes } from './admin-tenants';

export interface AdminRouterDeps {
  db: Knex;
  redis: Redis;
  logger: Pick<Logger, 'warn'>;
  /** The config's ADMIN_TOKEN. */
  adminToken: string;
  /** @default createBillingRepository(db) */
  billing?: BillingRepository;
  /** TTL of the API-key lookup entry a revocation writes. @default API_KEY_LOOKUP_TTL_SECONDS */
  apiKeyLookupTtlSeconds?: number;
  /** Workflow status for GET /admin/requests/:id; without it the status is null. */
  describeWorkflow?: DescribeWorkflow;
}

/** What the admin route groups share: dependencies and the repositories built on them. */
export interface AdminContext {
  db: Knex;
  redis: Redis;
  logger: Pick<Logger, 'warn'>;
  tenants: TenantRepository;
  apiKeys: ApiKeyRepository;
  modelPrices: ModelPriceRepository;
  billing: BillingRepository;
  apiKeyLookupTtlSeconds: number;
}

export function adminRouter(deps: AdminRouterDeps): Router {
  const ctx: AdminContext = {
    db: deps.db,
    redis: deps.redis,
    logger: deps.logger,
    tenants: createTenantRepository(deps.db),
    apiKeys: createApiKeyRepository(deps.db),
    modelPrices: createModelPriceRepository(deps.db),
    billing: deps.billing ?? createBillingRepository(deps.db),
    apiKeyLookupTtlSeconds: deps.apiKeyLookupTtlSeconds ?? API_KEY_LOOKUP_TTL_SECONDS,
  };
  const admin = Router();
  admin.use(adminTenantRoutes(ctx), adminApiKeyRoutes(ctx), adminModelRoutes(ctx), adminRequestRoutes({ ...ctx, describeWorkflow: deps.describeWorkflow }));

  const router = Router();
  router.use('/admin', adminAuth(deps.adminToken), admin);
  return router;
}
