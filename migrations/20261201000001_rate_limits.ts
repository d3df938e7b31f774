import type { Knex } from 'knex';

/**
 * Rate limits at the edge (requests and tokens per minute, parallel requests) on
 * tenants and API keys. NULL = unlimited; a limit is a positive integer.
 */
const TABLES = ['tenant_quota', 'api_key_quota'] as const;

export async function up(knex: Knex): Promise<void> {
  for (const table of TABLES) {
    await knex.schema.alterTable(table, (t) => {
      t.integer('rpm_limit').nullable();
      t.bigInteger('tpm_limit').nullable();
      t.integer('max_parallel_requests').nullable();
    });
    await knex.raw(`ALTER TABLE ${table}
      ADD CONSTRAINT ${table}_rpm_limit_positive CHECK (rpm_limit IS NULL OR rpm_limit > 0),
      ADD CONSTRAINT ${table}_tpm_limit_positive CHECK (tpm_limit IS NULL OR tpm_limit > 0),
      ADD CONSTRAINT ${table}_max_parallel_positive CHECK (max_parallel_requests IS NULL OR max_parallel_requests > 0)`);
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const table of TABLES) {
    await knex.schema.alterTable(table, (t) => {
      t.dropColumn('rpm_limit');
      t.dropColumn('tpm_limit');
      t.dropColumn('max_parallel_requests');
    });
  }
}
