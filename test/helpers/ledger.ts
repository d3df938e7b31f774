/** Ledger helpers for end-to-end tests. */
import type { Knex } from 'knex';

/**
 * Waits until a tenant has no pending ledger row (settlement runs after the
 * response is sent). Fails the test if something stays pending: nothing may.
 */
export async function settled(db: Knex, tenantId: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await db('billing_transaction').where({ tenant_id: tenantId, status: 'pending' }).count<{ count: string }[]>('* as count').first();
    if (Number(row?.count ?? 0) === 0) return;
    if (Date.now() > deadline) throw new Error(`tenant ${tenantId} still has ${row?.count} pending reservations after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Committed usage + pending reservations of a tenant, from the ledger alone. */
export async function ledgerUsage(db: Knex, tenantId: string): Promise<number> {
  const row = await db('billing_transaction')
    .where({ tenant_id: tenantId, kind: 'usage' })
    .select(db.raw(`COALESCE(SUM(CASE status WHEN 'committed' THEN amount_micros WHEN 'pending' THEN reserved_micros ELSE 0 END), 0)::text AS micros`))
    .first<{ micros: string }>();
  return Number(row?.micros ?? 0);
}

/**
 * Rows left in the body store for a request once settlement has had up to 10 s to delete them
 * (it deletes the body after the ledger commit and the Redis settlement). Counted, never compared
 * row by row: a large ciphertext in a failure diff would swamp the report.
 */
export async function bodyRowsAfterSettlement(db: Knex, requestId: string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await db('request_body').where({ request_id: requestId }).count<{ count: string }[]>({ count: '*' });
    const count = Number(rows[0]?.count ?? 0);
    if (count === 0 || Date.now() > deadline) return count;
    await new Promise((r) => setTimeout(r, 50));
  }
}
