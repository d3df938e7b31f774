import type { Knex } from 'knex';

/**
 * Budget alert settings of tenants and API keys: the webhook URL (NULL = none; a key
 * without one alerts to its tenant's) and the thresholds in percent of the quota or
 * budget (default 80 and 100). The tenant's signing secret is stored encrypted under
 * the payload codec's keys (alert_secret_key_id names the key; iv + ciphertext + tag,
 * src/codec/body-cipher.ts), never in plain text.
 */
const TABLES = ['tenant_quota', 'api_key_quota'] as const;

export async function up(knex: Knex): Promise<void> {
  for (const table of TABLES) {
    await knex.schema.alterTable(table, (t) => {
      t.text('alert_webhook_url').nullable();
      t.specificType('alert_thresholds_percent', 'integer[]').notNullable().defaultTo(knex.raw(`'{80,100}'::integer[]`));
    });
    await knex.raw(`ALTER TABLE ${table}
      ADD CONSTRAINT ${table}_alert_thresholds_range CHECK (1 <= ALL (alert_thresholds_percent) AND 1000 >= ALL (alert_thresholds_percent))`);
  }
  await knex.schema.alterTable('tenant_quota', (t) => {
    t.text('alert_secret_key_id').nullable();
    t.binary('alert_secret_ciphertext').nullable();
  });
  await knex.raw(`ALTER TABLE tenant_quota ADD CONSTRAINT tenant_quota_alert_secret_pair CHECK ((alert_secret_key_id IS NULL) = (alert_secret_ciphertext IS NULL))`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tenant_quota', (t) => {
    t.dropColumn('alert_secret_key_id');
    t.dropColumn('alert_secret_ciphertext');
  });
  for (const table of TABLES) {
    await knex.schema.alterTable(table, (t) => {
      t.dropColumn('alert_webhook_url');
      t.dropColumn('alert_thresholds_percent');
    });
  }
}
