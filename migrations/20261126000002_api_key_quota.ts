import type { Knex } from 'knex';

/** M1.1 api_key_quota: API keys (stored hashed) with an optional budget and the spent amount synced from Redis. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_key_quota', (t) => {
    t.text('id').primary();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('RESTRICT');
    t.text('name').notNullable();
    // SHA-256 of the key: the key itself is shown once and never stored.
    t.text('key_hash').notNullable().unique();
    t.text('key_prefix').notNullable();
    // NULL = no budget of its own (the tenant quota still applies).
    t.bigInteger('budget_micros').nullable();
    t.bigInteger('spent_micros').notNullable().defaultTo(0);
    t.text('status').notNullable().defaultTo('active');
    t.timestamp('revoked_at', { useTz: true }).nullable();
    t.timestamp('synced_at', { useTz: true }).nullable();
    t.timestamps(true, true);
    t.index(['tenant_id']);
  });
  await knex.raw(`ALTER TABLE api_key_quota
    ADD CONSTRAINT api_key_quota_status CHECK (status IN ('active', 'revoked')),
    ADD CONSTRAINT api_key_quota_budget_nonnegative CHECK (budget_micros IS NULL OR budget_micros >= 0)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_key_quota');
}
