import type { Knex } from 'knex';

/** M1.1 tenant_quota: a tenant's quota limit and the used amount synced from Redis. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tenant_quota', (t) => {
    t.text('tenant_id').primary();
    t.text('name').notNullable();
    t.bigInteger('quota_limit_micros').notNullable();
    // Synced from Redis (M4.1); includes open reservations at sync time.
    t.bigInteger('used_micros').notNullable().defaultTo(0);
    t.timestamp('synced_at', { useTz: true }).nullable();
    t.timestamps(true, true);
  });
  await knex.raw('ALTER TABLE tenant_quota ADD CONSTRAINT tenant_quota_limit_nonnegative CHECK (quota_limit_micros >= 0)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('tenant_quota');
}
