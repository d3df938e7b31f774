/**
 * BillingRepository on real PostgreSQL (M3.4 two-phase commit, M3.5 idempotent
 * ledger operations, M10.1 "BillingRepository 10+"). Every test uses its own
 * tenant ids because test files share the database.
 */
import type { Knex } from 'knex';
import { createBillingRepository, type BillingRepository, type PendingTransactionInput } from '../../src/db/billing-repository';
import {
  InvalidCursorError,
  InvalidLedgerAmountError,
  InvalidPageSizeError,
  LedgerEntryNotFoundError,
  LedgerRequestConflictError,
  LedgerStateError,
  UnsafeLedgerIntegerError,
} from '../../src/db/ledger-types';
import { testDb, uniqueId } from '../helpers/services';

let db: Knex;
let repo: BillingRepository;

beforeAll(() => {
  db = testDb();
  repo = createBillingRepository(db);
});
afterAll(async () => {
  await db.destroy();
});

/** A tenant with one API key per given budget (null = no budget). */
async function seedTenant(limitMicros: number, budgets: Array<number | null> = [null]): Promise<{ tenantId: string; keyIds: string[] }> {
  const tenantId = uniqueId('t');
  await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: limitMicros });
  const keyIds = budgets.map(() => uniqueId('k'));
  if (keyIds.length > 0) {
    await db('api_key_quota').insert(
      keyIds.map((id, i) => ({ id, tenant_id: tenantId, name: id, key_hash: `hash-${id}`, key_prefix: 'sk-test', budget_micros: budgets[i] })),
    );
  }
  return { tenantId, keyIds };
}

function pending(tenantId: string, apiKeyId: string, reservedMicros: number, requestId = uniqueId('req')): PendingTransactionInput {
  return { requestId, tenantId, apiKeyId, workflowId: `billed-request-${requestId}`, model: 'gpt-test', reservedMicros, admissionPath: 'redis', promptTokens: 12 };
}

async function ledgerRows(requestId: string): Promise<number> {
  const [row] = await db('billing_transaction').where('request_id', requestId).count<Array<{ count: string }>>('* as count');
  return Number(row!.count);
}

describe('BillingRepository two-phase ledger (M3.4, M3.5)', () => {
  it('createPendingTransaction is idempotent: the same request id twice gives one row with the first values (M3.5)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const input = pending(tenantId, keyIds[0]!, 250_000);

    const first = await repo.createPendingTransaction(input);
    const second = await repo.createPendingTransaction({ ...input, reservedMicros: 999_999, admissionPath: 'postgres' });

    expect(first.created).toBe(true);
    expect(first.entry).toMatchObject({
      requestId: input.requestId, tenantId, apiKeyId: keyIds[0], kind: 'usage', status: 'pending', workflowId: input.workflowId,
      model: 'gpt-test', reservedMicros: 250_000, admissionPath: 'redis', amountMicros: null, promptTokens: 12,
      completionTokens: null, tokenSource: null, committedAt: null, voidedAt: null,
    });
    expect(typeof first.entry.id).toBe('number');
    expect(first.entry.createdAt).toBeInstanceOf(Date);
    expect(second.created).toBe(false);
    expect(second.entry).toEqual(first.entry);
    expect(await ledgerRows(input.requestId)).toBe(1);
  });

  it('records the operation a usage row billed (issue 11): chat by default, a row written before the column reads as chat, a top-up has none', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const chat = await repo.createPendingTransaction(pending(tenantId, keyIds[0]!, 10));
    const embeddings = await repo.createPendingTransaction({ ...pending(tenantId, keyIds[0]!, 10), operation: 'embeddings' });
    expect([chat.entry.operation, embeddings.entry.operation]).toEqual(['chat', 'embeddings']);
    const old = pending(tenantId, keyIds[0]!, 10);
    await repo.createPendingTransaction(old);
    await db('billing_transaction').where({ request_id: old.requestId }).update({ operation: null });
    expect((await repo.findByRequestId(old.requestId))?.operation).toBe('chat');
    const topup = uniqueId('topup');
    await repo.recordTransaction({ requestId: topup, tenantId, kind: 'topup', amountMicros: 5 });
    expect((await repo.findByRequestId(topup))?.operation).toBeNull();
    await expect(db('billing_transaction').where({ request_id: old.requestId }).update({ operation: 'images' })).rejects.toThrow(/billing_transaction_operation_known/);
  });

  it('50 concurrent createPendingTransaction calls with one request id create exactly one row (M3.5)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const input = pending(tenantId, keyIds[0]!, 40_000);

    const results = await Promise.all(Array.from({ length: 50 }, () => repo.createPendingTransaction(input)));

    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(new Set(results.map((r) => r.entry.id)).size).toBe(1);
    expect(await ledgerRows(input.requestId)).toBe(1);
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(40_000);
  });

  it('commits once: a second commit with other numbers changes nothing and reports committed:false (M3.4, M3.5)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const input = pending(tenantId, keyIds[0]!, 300_000);
    await repo.createPendingTransaction(input);

    const first = await repo.commitPendingTransaction({ requestId: input.requestId, amountMicros: 123_456, promptTokens: 100, completionTokens: 200, tokenSource: 'upstream' });
    const again = await repo.commitPendingTransaction({ requestId: input.requestId, amountMicros: 999_999, promptTokens: 1, completionTokens: 2, tokenSource: 'estimate' });

    expect(first.committed).toBe(true);
    expect(first.entry).toMatchObject({ status: 'committed', amountMicros: 123_456, reservedMicros: 300_000, promptTokens: 100, completionTokens: 200, tokenSource: 'upstream' });
    expect(first.entry.committedAt).toBeInstanceOf(Date);
    expect(again.committed).toBe(false);
    expect(again.entry).toEqual(first.entry);
    expect(await repo.findByRequestId(input.requestId)).toEqual(first.entry);
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(123_456);
  });

  it('voids a pending reservation idempotently; committing a voided row throws LedgerStateError (M3.4)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const input = pending(tenantId, keyIds[0]!, 500_000);
    await repo.createPendingTransaction(input);

    const voided = await repo.voidPendingTransaction({ requestId: input.requestId, reason: 'upstream_failed_before_output' });
    const again = await repo.voidPendingTransaction({ requestId: input.requestId, reason: 'other reason' });

    expect(voided.voided).toBe(true);
    expect(voided.entry).toMatchObject({ status: 'voided', amountMicros: 0, reservedMicros: 500_000, failureReason: 'upstream_failed_before_output' });
    expect(voided.entry.voidedAt).toBeInstanceOf(Date);
    expect(again).toEqual({ voided: false, entry: voided.entry });
    const commit = repo.commitPendingTransaction({ requestId: input.requestId, amountMicros: 1, promptTokens: 1, completionTokens: 1, tokenSource: 'tiktoken' });
    await expect(commit).rejects.toBeInstanceOf(LedgerStateError);
    await expect(commit).rejects.toMatchObject({ status: 'voided', attempted: 'commit' });
    expect(await repo.findByRequestId(input.requestId)).toEqual(voided.entry);
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(0);
  });

  it('voiding a committed row throws LedgerStateError and leaves the charge in place (M3.4)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000);
    const input = pending(tenantId, keyIds[0]!, 500_000);
    await repo.createPendingTransaction(input);
    const { entry } = await repo.commitPendingTransaction({ requestId: input.requestId, amountMicros: 77_000, promptTokens: 5, completionTokens: 6, tokenSource: 'tiktoken' });

    const attempt = repo.voidPendingTransaction({ requestId: input.requestId, reason: 'late failure' });

    await expect(attempt).rejects.toBeInstanceOf(LedgerStateError);
    await expect(attempt).rejects.toMatchObject({ status: 'committed', attempted: 'void' });
    expect(await repo.findByRequestId(input.requestId)).toEqual(entry);
  });

  it('commit or void of an unknown request id throws LedgerEntryNotFoundError and writes nothing', async () => {
    const requestId = uniqueId('missing');

    await expect(repo.commitPendingTransaction({ requestId, amountMicros: 1, promptTokens: 1, completionTokens: 1, tokenSource: 'upstream' })).rejects.toBeInstanceOf(LedgerEntryNotFoundError);
    await expect(repo.voidPendingTransaction({ requestId, reason: 'x' })).rejects.toBeInstanceOf(LedgerEntryNotFoundError);
    expect(await repo.findByRequestId(requestId)).toBeUndefined();
  });

  it('recordTransaction is idempotent by request id and refuses a request id owned by another tenant (M3.5)', async () => {
    const { tenantId } = await seedTenant(1_000_000, []);
    const other = await seedTenant(1_000_000, []);
    const requestId = uniqueId('topup');

    const first = await repo.recordTransaction({ requestId, tenantId, kind: 'topup', amountMicros: 5_000_000 });
    const again = await repo.recordTransaction({ requestId, tenantId, kind: 'topup', amountMicros: 7_000_000 });

    expect(first.created).toBe(true);
    expect(first.entry).toMatchObject({ kind: 'topup', status: 'committed', amountMicros: 5_000_000, reservedMicros: 0, apiKeyId: null, admissionPath: null });
    expect(first.entry.committedAt).toBeInstanceOf(Date);
    expect(again).toEqual({ created: false, entry: first.entry });
    await expect(repo.recordTransaction({ requestId, tenantId: other.tenantId, kind: 'topup', amountMicros: 1 })).rejects.toBeInstanceOf(LedgerRequestConflictError);
    expect(await ledgerRows(requestId)).toBe(1);
  });

  it('rejects non-integer or negative money before writing anything (money is integer micros)', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000);
    const input = pending(tenantId, keyIds[0]!, 10.5);

    await expect(repo.createPendingTransaction(input)).rejects.toBeInstanceOf(InvalidLedgerAmountError);
    await expect(repo.recordTransaction({ requestId: input.requestId, tenantId, kind: 'topup', amountMicros: -1 })).rejects.toBeInstanceOf(InvalidLedgerAmountError);
    expect(await ledgerRows(input.requestId)).toBe(0);
  });

  it('reading a BIGINT beyond 2^53 throws UnsafeLedgerIntegerError instead of rounding money', async () => {
    const { tenantId } = await seedTenant(1_000_000, []);
    const requestId = uniqueId('huge');
    await repo.recordTransaction({ requestId, tenantId, kind: 'usage', amountMicros: 1 });
    // A committed row (never seen by pending sweeps), corrupted only for the length of this test.
    await db('billing_transaction').where('request_id', requestId).update({ amount_micros: db.raw("'9007199254740993'::bigint") });
    try {
      await expect(repo.findByRequestId(requestId)).rejects.toMatchObject({ name: 'UnsafeLedgerIntegerError', column: 'amount_micros', value: '9007199254740993' });
      await expect(repo.tenantLedgerUsage(tenantId)).rejects.toBeInstanceOf(UnsafeLedgerIntegerError);
    } finally {
      await db('billing_transaction').where('request_id', requestId).update({ amount_micros: 1 });
    }
    expect((await repo.findByRequestId(requestId))?.amountMicros).toBe(1);
  });
});

describe('ledger usage and spend (usage = committed amounts + pending reservations)', () => {
  it('sums exactly across pending, committed, voided and top-up rows, per tenant and per key', async () => {
    const { tenantId, keyIds } = await seedTenant(100_000_000, [null, 2_000_000]);
    const [keyA, keyB] = keyIds as [string, string];
    const a1 = pending(tenantId, keyA, 400_000); // stays pending: counts 400,000
    const a2 = pending(tenantId, keyA, 300_000); // committed at 123,457: counts 123,457
    const a3 = pending(tenantId, keyA, 900_000); // voided: counts 0
    const b1 = pending(tenantId, keyB, 250_001); // committed above its reservation: counts 260,003
    for (const p of [a1, a2, a3, b1]) await repo.createPendingTransaction(p);
    await repo.commitPendingTransaction({ requestId: a2.requestId, amountMicros: 123_457, promptTokens: 1, completionTokens: 2, tokenSource: 'upstream' });
    await repo.voidPendingTransaction({ requestId: a3.requestId, reason: 'client_disconnected' });
    await repo.commitPendingTransaction({ requestId: b1.requestId, amountMicros: 260_003, promptTokens: 1, completionTokens: 2, tokenSource: 'tiktoken' });
    await repo.recordTransaction({ requestId: uniqueId('topup'), tenantId, kind: 'topup', amountMicros: 50_000_000 }); // not usage
    await repo.recordTransaction({ requestId: uniqueId('direct'), tenantId, apiKeyId: keyB, kind: 'usage', amountMicros: 11, model: 'gpt-test', promptTokens: 1, completionTokens: 1, tokenSource: 'estimate' });

    expect(await repo.tenantLedgerUsage(tenantId)).toBe(400_000 + 123_457 + 260_003 + 11);
    expect(await repo.apiKeyLedgerSpend(keyA)).toBe(400_000 + 123_457);
    expect(await repo.apiKeyLedgerSpend(keyB)).toBe(260_003 + 11);
    expect(await repo.tenantLedgerUsage(uniqueId('nobody'))).toBe(0);
    expect((await repo.tenantUsageSnapshot(tenantId)).pending).toEqual([{ requestId: a1.requestId, reservedMicros: 400_000 }]);
    await repo.voidPendingTransaction({ requestId: a1.requestId, reason: 'test cleanup' });
  });
});

describe('listTenantTransactions', () => {
  it('lists newest first with a limit and an opaque cursor: pages have no duplicates and no gaps, new rows do not shift pages', async () => {
    const { tenantId } = await seedTenant(1_000_000, []);
    const other = await seedTenant(1_000_000, []);
    await repo.recordTransaction({ requestId: uniqueId('other'), tenantId: other.tenantId, kind: 'topup', amountMicros: 1 });
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) ids.push((await repo.recordTransaction({ requestId: uniqueId(`topup${i}`), tenantId, kind: 'topup', amountMicros: 1_000 + i })).entry.id);
    const newestFirst = [...ids].reverse();

    const page1 = await repo.listTenantTransactions(tenantId, { limit: 3 });
    await repo.recordTransaction({ requestId: uniqueId('late'), tenantId, kind: 'topup', amountMicros: 9 }); // lands before page 1
    const page2 = await repo.listTenantTransactions(tenantId, { limit: 3, cursor: page1.nextCursor });
    const page3 = await repo.listTenantTransactions(tenantId, { limit: 3, cursor: page2.nextCursor });

    expect(page1.data.map((e) => e.id)).toEqual(newestFirst.slice(0, 3));
    expect(page2.data.map((e) => e.id)).toEqual(newestFirst.slice(3, 6));
    expect(page3.data.map((e) => e.id)).toEqual(newestFirst.slice(6));
    expect(page3.nextCursor).toBeNull();
    expect(page1.data.map((e) => e.amountMicros)).toEqual([1_006, 1_005, 1_004]);
    expect(typeof page1.nextCursor).toBe('string');
    expect(page1.nextCursor).not.toBe(String(newestFirst[2])); // opaque, not the raw id

    const exact = await repo.listTenantTransactions(tenantId, { limit: 8 });
    expect(exact.data).toHaveLength(8);
    expect(exact.nextCursor).toBeNull(); // exactly limit rows left: no empty extra page
  });

  it('a malformed or forged cursor throws InvalidCursorError; a bad limit throws InvalidPageSizeError', async () => {
    const { tenantId } = await seedTenant(1_000_000, []);
    const forged = [
      'not a cursor!',
      '',
      Buffer.from('abc').toString('base64url'),
      Buffer.from('0').toString('base64url'),
      Buffer.from('-5').toString('base64url'),
      Buffer.from('99999999999999999999').toString('base64url'),
      `${Buffer.from('12').toString('base64url')}==`,
    ];

    for (const cursor of forged) await expect(repo.listTenantTransactions(tenantId, { limit: 10, cursor })).rejects.toBeInstanceOf(InvalidCursorError);
    for (const limit of [0, -1, 1.5, 501]) await expect(repo.listTenantTransactions(tenantId, { limit })).rejects.toBeInstanceOf(InvalidPageSizeError);
    expect(await repo.listTenantTransactions(tenantId, { limit: 10, cursor: Buffer.from('12').toString('base64url') })).toEqual({ data: [], nextCursor: null });
  });
});
