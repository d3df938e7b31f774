import type { Knex } from 'knex';

/**
 * Spend reports (GET /admin/tenants/:id/usage, /admin/api-keys/:id/usage, the key's own
 * /v1/dashboard/billing/usage) read committed usage rows of one tenant or key by commit
 * time: these partial indexes hold exactly those rows, so a report over a month reads that
 * month's rows of that subject and nothing else, however large the ledger grows.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX billing_transaction_tenant_committed ON billing_transaction (tenant_id, committed_at)
                  WHERE status = 'committed' AND kind = 'usage'`);
  await knex.raw(`CREATE INDEX billing_transaction_key_committed ON billing_transaction (api_key_id, committed_at)
                  WHERE status = 'committed' AND kind = 'usage'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX billing_transaction_key_committed');
  await knex.raw('DROP INDEX billing_transaction_tenant_committed');
}
