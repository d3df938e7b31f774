import type { Knex } from 'knex';

/**
 * Usage-export destinations configured through the admin API (PUT /admin/exports/:destination,
 * docs/usage-export.md). A row here replaces the environment's settings of that destination.
 * `settings` holds what is not secret (URL, source, metric code, ...); the destination's
 * credential (OpenMeter token, Lago or Stripe API key, webhook signing secret) is stored only
 * encrypted: AES-256-GCM under the payload codec's keys, bound to the destination's name.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('usage_export_setting', (t) => {
    t.text('destination').primary();
    t.boolean('enabled').notNullable();
    t.jsonb('settings').notNullable();
    t.text('secret_key_id').nullable();
    t.binary('secret_ciphertext').nullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE usage_export_setting
    ADD CONSTRAINT usage_export_setting_destination CHECK (destination IN ('openmeter', 'lago', 'stripe', 'webhook')),
    ADD CONSTRAINT usage_export_setting_secret CHECK ((secret_key_id IS NULL) = (secret_ciphertext IS NULL))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('usage_export_setting');
}
