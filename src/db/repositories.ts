/**
 * Every repository on one database handle, built once at start-up (src/roles) and
 * handed to the services and activities that need them.
 */
import type { Knex } from 'knex';
import { createApiKeyRepository } from './api-key-repository';
import { createBillingRepository } from './billing-repository';
import { createModelPriceRepository } from './model-price-repository';
import { createTenantRepository } from './tenant-repository';

export function createRepositories(db: Knex) {
  return {
    tenants: createTenantRepository(db),
    apiKeys: createApiKeyRepository(db),
    modelPrices: createModelPriceRepository(db),
    /** The ledger (billing_transaction). */
    billing: createBillingRepository(db),
  };
}

export type Repositories = ReturnType<typeof createRepositories>;
