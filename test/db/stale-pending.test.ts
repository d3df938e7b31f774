/**
 * BillingRepository.listStalePending, the sweeper's read of the ledger (issue 9 item 4):
 * only usage rows pending longer than the threshold, oldest first, every one exactly once
 * across pages even when many share one created_at to the microsecond, and through the
 * partial index on pending rows. Each case runs in a transaction that is rolled back, so
 * no other test (or a sweeper running meanwhile) ever sees its old rows.
 */
import type { Knex } from 'knex';
import { createBillingRepository, type StalePendingCursor } from '../../src/db/billing-repository';
import { seedTenant } from '../helpers/activity-deps';
import { testDb, uniqueId } from '../helpers/services';

let db: Knex;
beforeAll(() => {
  db = testDb();
});
afterAll(async () => {
  await db.destroy();
});

const ledger = () => createBillingRepository(db);

/** Runs `fn` in a transaction that is always rolled back. */
async function rolledBack(fn: (trx: Knex.Transaction) => Promise<void>): Promise<void> {
  const trx = await db.transaction();
  try {
    await fn(trx);
  } finally {
    await trx.rollback();
  }
}

async function pendingRow(trx: Knex.Transaction, tenantId: string, apiKeyId: string, createdAt: string): Promise<string> {
  const requestId = uniqueId('stale');
  await ledger().createPendingTransaction({ requestId, tenantId, apiKeyId, workflowId: `billed-request:${requestId}`, model: 'm', reservedMicros: 100, admissionPath: 'redis' }, trx);
  await trx('billing_transaction').where({ request_id: requestId }).update({ created_at: trx.raw('?::timestamptz', [createdAt]) });
  return requestId;
}

/** Every page from the start; only this test's request ids are kept (the table is shared). */
async function allPages(trx: Knex.Transaction, mine: ReadonlySet<string>, olderThanSeconds: number, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let after: StalePendingCursor | null = null;
  let pages = 0;
  for (;;) {
    const page = await ledger().listStalePending({ olderThanSeconds, after, limit }, trx);
    pages++;
    ids.push(...page.entries.map((e) => e.requestId).filter((id) => mine.has(id)));
    if (page.next === null) return { ids, pages };
    after = page.next;
  }
}

describe('BillingRepository.listStalePending (issue 9, the sweeper)', () => {
  it('pages through rows sharing one created_at to the microsecond: each exactly once, in (created_at, id) order', async () => {
    const seed = await seedTenant(db, 1_000_000);
    await rolledBack(async (trx) => {
      // Five rows in the same microsecond, two a microsecond later, one a day later.
      const same = '2001-02-03 04:05:06.123456+00';
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await pendingRow(trx, seed.tenantId, seed.apiKeyIds[0]!, same));
      for (let i = 0; i < 2; i++) ids.push(await pendingRow(trx, seed.tenantId, seed.apiKeyIds[0]!, '2001-02-03 04:05:06.123457+00'));
      ids.push(await pendingRow(trx, seed.tenantId, seed.apiKeyIds[0]!, '2001-02-04 04:05:06+00'));
      const mine = new Set(ids);
      for (const limit of [1, 2, 3, 100]) {
        const { ids: seen } = await allPages(trx, mine, 3600, limit);
        expect({ limit, seen }).toEqual({ limit, seen: ids });
      }
    });
  });

  it('leaves out young pending rows and settled ones', async () => {
    const seed = await seedTenant(db, 1_000_000);
    await rolledBack(async (trx) => {
      const key = seed.apiKeyIds[0]!;
      const old = await pendingRow(trx, seed.tenantId, key, '2001-01-01 00:00:00+00');
      const young = await pendingRow(trx, seed.tenantId, key, new Date(Date.now() - 60_000).toISOString());
      const committed = await pendingRow(trx, seed.tenantId, key, '2001-01-01 00:00:00+00');
      await ledger().commitPendingTransaction({ requestId: committed, amountMicros: 5, promptTokens: 1, completionTokens: 1, tokenSource: 'upstream' }, trx);
      const voided = await pendingRow(trx, seed.tenantId, key, '2001-01-01 00:00:00+00');
      await ledger().voidPendingTransaction({ requestId: voided, reason: 'test' }, trx);
      const mine = new Set([old, young, committed, voided]);

      expect((await allPages(trx, mine, 3600, 100)).ids).toEqual([old]);
      // Two minutes: the one-minute-old row is still young; ten seconds: it is stale too.
      expect((await allPages(trx, mine, 120, 100)).ids).toEqual([old]);
      expect((await allPages(trx, mine, 10, 100)).ids).toEqual([old, young]);
      const page = await ledger().listStalePending({ olderThanSeconds: 3600, after: null, limit: 500 }, trx);
      expect(page.entries.every((e) => e.status === 'pending' && e.kind === 'usage')).toBe(true);
    });
  });

  it('is served by the partial index on pending rows (billing_transaction_pending)', async () => {
    await rolledBack(async (trx) => {
      // A tiny table is scanned whatever its indexes: forbid the sequential scan to see whether the index CAN serve the query.
      await trx.raw('SET LOCAL enable_seqscan = off');
      const issued: Array<{ sql: string; bindings: readonly unknown[] }> = [];
      const listen = (q: { sql: string; bindings?: readonly unknown[] }): void => void issued.push({ sql: q.sql, bindings: q.bindings ?? [] });
      db.on('query', listen);
      try {
        await ledger().listStalePending({ olderThanSeconds: 60, after: { createdAt: '2001-01-01 00:00:00+00', id: 1 }, limit: 10 }, trx);
      } finally {
        db.removeListener('query', listen);
      }
      const page = issued.find((q) => q.sql.includes('created_at_cursor'));
      expect(page).toBeDefined();
      // The event shows pg's native placeholders ($1, $2, ... in order); knex.raw takes `?`.
      const plan = await trx.raw<{ rows: Array<{ 'QUERY PLAN': string }> }>(`EXPLAIN ${page!.sql.replace(/\$\d+/g, '?')}`, page!.bindings as Knex.RawBinding[]);
      expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/(Index Scan using|Bitmap Index Scan on) billing_transaction_pending/);
    });
  });
});
