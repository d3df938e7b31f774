import type { Knex } from 'knex';

/**
 * Budget windows (issue 12, docs/budget-windows.md).
 *
 * budget_window: the calendar-aligned caps of a tenant or an API key, one row per
 * (subject, period), so a key can hold a daily AND a monthly cap, each enforced. All
 * windows of one subject share its time zone (`timezone`, canonical IANA name).
 *
 * billing_transaction.budget_windows: the windows a usage entry was reserved in, as
 * window ids `<t|k>:<subject id>:<period>:<window start, ISO 8601 UTC>` written with the
 * pending row and never changed. A request admitted before a boundary therefore stays in
 * the window that reserved it, and a window's spend is always
 *   SUM(committed amount + pending reservation) WHERE budget_windows @> ARRAY[window id]
 * (GIN-indexed), whatever the caps or time zone are today.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('budget_window', (t) => {
    t.text('subject_kind').notNullable();
    // The tenant id, or the API key id.
    t.text('subject_id').notNullable();
    t.text('tenant_id').notNullable().references('tenant_id').inTable('tenant_quota').onDelete('CASCADE');
    t.text('period').notNullable();
    t.bigInteger('limit_micros').notNullable();
    t.text('timezone').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['subject_kind', 'subject_id', 'period']);
    t.index(['tenant_id'], 'budget_window_tenant');
  });
  await knex.raw(`ALTER TABLE budget_window
    ADD CONSTRAINT budget_window_kind_check CHECK (subject_kind IN ('tenant', 'api_key')),
    ADD CONSTRAINT budget_window_period_check CHECK (period IN ('daily', 'weekly', 'monthly')),
    ADD CONSTRAINT budget_window_limit_check CHECK (limit_micros >= 0 AND limit_micros <= 9007199254740991)`);

  await knex.raw(`ALTER TABLE billing_transaction ADD COLUMN budget_windows text[] NOT NULL DEFAULT '{}'`);
  await knex.raw(`CREATE INDEX billing_transaction_budget_windows ON billing_transaction USING GIN (budget_windows)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP INDEX IF EXISTS billing_transaction_budget_windows');
  await knex.raw('ALTER TABLE billing_transaction DROP COLUMN IF EXISTS budget_windows');
  await knex.schema.dropTableIfExists('budget_window');
}
