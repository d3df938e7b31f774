/** M1.1: the knex migrations run up, down and up again cleanly on real PostgreSQL. */
import type { Knex } from 'knex';
import { appliedMigrations, migrateLatest, rollbackAll } from '../../src/db/migrate';
import { MIGRATION_NAMES } from '../../migrations';
import { scratchDatabase } from '../helpers/services';

const TABLES = ['api_key_quota', 'billing_transaction', 'consistency_report', 'model_price', 'tenant_quota'];

async function tables(db: Knex): Promise<string[]> {
  const rows = (await db('information_schema.tables').where({ table_schema: 'public' }).pluck('table_name')) as string[];
  return rows.filter((t) => TABLES.includes(t)).sort();
}

describe('migrations (M1.1)', () => {
  let scratch: Awaited<ReturnType<typeof scratchDatabase>>;
  beforeAll(async () => {
    // A database of its own, so the migrations never drop tables under other test files.
    scratch = await scratchDatabase('migr');
  });
  afterAll(async () => {
    await scratch.drop();
  });

  it('run up, down and up again cleanly', async () => {
    const { db } = scratch;
    expect(await migrateLatest(db)).toEqual(MIGRATION_NAMES);
    expect(await tables(db)).toEqual(TABLES);
    expect(await migrateLatest(db)).toEqual([]); // a second run applies nothing

    expect((await rollbackAll(db)).sort()).toEqual([...MIGRATION_NAMES].sort());
    expect(await tables(db)).toEqual([]);
    expect(await appliedMigrations(db)).toEqual([]);

    expect(await migrateLatest(db)).toEqual(MIGRATION_NAMES);
    expect(await tables(db)).toEqual(TABLES);
  });

  it('stores money as BIGINT and enforces one ledger row per request id', async () => {
    const { db } = scratch;
    const cols: Array<{ column_name: string; data_type: string }> = await db('information_schema.columns')
      .where({ table_schema: 'public' })
      .andWhere('column_name', 'like', '%_micros%')
      .select('column_name', 'data_type');
    expect(cols.length).toBe(18); // 9 of the account, price and ledger tables (issue 11 added model_price's cached-input price), 5 of consistency_report, 2 of budget_alert (used, limit), 1 of budget_window (limit), 1 of usage_export_outbox (cost)
    for (const c of cols) expect([c.column_name, c.data_type]).toEqual([c.column_name, 'bigint']);

    await db('tenant_quota').insert({ tenant_id: 't1', name: 'T1', quota_limit_micros: '9007199254740993' });
    const row = await db('tenant_quota').where({ tenant_id: 't1' }).first('quota_limit_micros');
    expect(row.quota_limit_micros).toBe('9007199254740993'); // beyond 2^53: exact, no float

    const tx = { tenant_id: 't1', request_id: 'r1', status: 'pending', reserved_micros: 10 };
    await db('billing_transaction').insert(tx);
    await expect(db('billing_transaction').insert(tx)).rejects.toThrow(/billing_transaction_request_id_unique/);
  });

  it('rejects bad states and amounts at the database', async () => {
    const { db } = scratch;
    await expect(db('tenant_quota').insert({ tenant_id: 'neg', name: 'n', quota_limit_micros: -1 })).rejects.toThrow(
      /tenant_quota_limit_nonnegative/,
    );
    await expect(db('billing_transaction').insert({ tenant_id: 't1', request_id: 'r2', status: 'done' })).rejects.toThrow(
      /billing_transaction_status/,
    );
    await expect(db('billing_transaction').insert({ tenant_id: 't1', request_id: 'r3', status: 'committed' })).rejects.toThrow(
      /billing_transaction_committed_amount/,
    );
    await expect(db('billing_transaction').insert({ tenant_id: 'nobody', request_id: 'r4', status: 'pending' })).rejects.toThrow(
      /foreign key/,
    );
    await expect(
      db('api_key_quota').insert({ id: 'k', tenant_id: 't1', name: 'k', key_hash: 'h', key_prefix: 'p', status: 'lost' }),
    ).rejects.toThrow(/api_key_quota_status/);
  });
});
