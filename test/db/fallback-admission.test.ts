/**
 * The PostgreSQL fallback admission, BillingRepository.reserveInLedger (M2.3), on
 * real PostgreSQL: the ledger decides, row locks serialize a tenant's admissions,
 * and concurrent requests never reserve past the tenant quota or the key budget.
 */
import type { Knex } from 'knex';
import { createBillingRepository, type BillingRepository, type FallbackReservationInput } from '../../src/db/billing-repository';
import { LedgerRequestConflictError } from '../../src/db/ledger-types';
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

type KeySeed = { budget: number | null; status?: 'active' | 'revoked' };

async function seedTenant(limitMicros: number, keys: KeySeed[] = [{ budget: null }]): Promise<{ tenantId: string; keyIds: string[] }> {
  const tenantId = uniqueId('fb-t');
  await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: limitMicros });
  const keyIds = keys.map(() => uniqueId('fb-k'));
  await db('api_key_quota').insert(
    keyIds.map((id, i) => ({
      id, tenant_id: tenantId, name: id, key_hash: `hash-${id}`, key_prefix: 'sk-test', budget_micros: keys[i]!.budget, status: keys[i]!.status ?? 'active',
    })),
  );
  return { tenantId, keyIds };
}

function reservation(tenantId: string, apiKeyId: string, reservedMicros: number, requestId = uniqueId('fb-req')): FallbackReservationInput {
  return { requestId, tenantId, apiKeyId, workflowId: `billed-request-${requestId}`, model: 'gpt-test', reservedMicros, promptTokens: 42 };
}

async function rowsOfTenant(tenantId: string): Promise<number> {
  const [row] = await db('billing_transaction').where('tenant_id', tenantId).count<Array<{ count: string }>>('* as count');
  return Number(row!.count);
}

/** Voids what a test left pending so sweeps in other test files never meet it. */
async function voidOpenReservations(tenantId: string): Promise<void> {
  for (const r of (await repo.tenantUsageSnapshot(tenantId)).pending) await repo.voidPendingTransaction({ requestId: r.requestId, reason: 'test cleanup' });
}

describe('reserveInLedger: PostgreSQL fallback admission (M2.3)', () => {
  it('admits within quota and budget: a pending ledger row with admission_path postgres and exact remaining amounts', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000, [{ budget: 500_000 }]);
    const input = reservation(tenantId, keyIds[0]!, 120_000);

    const result = await repo.reserveInLedger(input);

    expect(result).toMatchObject({ status: 'reserved', reservedMicros: 120_000, tenantRemainingMicros: 880_000, keyRemainingMicros: 380_000 });
    if (result.status !== 'reserved') throw new Error('expected reserved');
    expect(result.entry).toMatchObject({
      requestId: input.requestId, tenantId, apiKeyId: keyIds[0], kind: 'usage', status: 'pending', admissionPath: 'postgres',
      reservedMicros: 120_000, amountMicros: null, promptTokens: 42, workflowId: input.workflowId, model: 'gpt-test',
    });
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(120_000);
    expect(await repo.apiKeyLedgerSpend(keyIds[0]!)).toBe(120_000);
    await voidOpenReservations(tenantId);
  });

  it('admits at the exact tenant boundary (used + amount == limit) and denies one micro more with insufficient_quota', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000);
    const key = keyIds[0]!;
    const committed = reservation(tenantId, key, 500_000);
    expect(await repo.reserveInLedger(committed)).toMatchObject({ status: 'reserved', tenantRemainingMicros: 500_000 });
    await repo.commitPendingTransaction({ requestId: committed.requestId, amountMicros: 150_000, promptTokens: 1, completionTokens: 1, tokenSource: 'upstream' });
    // Redis-path admissions are in the ledger too: the fallback must count them.
    await repo.createPendingTransaction({ ...reservation(tenantId, key, 600_000), admissionPath: 'redis' });

    const atLimit = await repo.reserveInLedger(reservation(tenantId, key, 250_000)); // 600,000 + 150,000 + 250,000 == 1,000,000
    const over = await repo.reserveInLedger(reservation(tenantId, key, 1));

    expect(atLimit).toMatchObject({ status: 'reserved', reservedMicros: 250_000, tenantRemainingMicros: 0, keyRemainingMicros: null });
    expect(over).toEqual({ status: 'insufficient_quota', tenantRemainingMicros: 0, keyRemainingMicros: null });
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(1_000_000);
    expect(await rowsOfTenant(tenantId)).toBe(3);
    await voidOpenReservations(tenantId);
  });

  it('denies past the key budget with budget_exceeded (exact boundary admitted) while the tenant still has room', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000, [{ budget: 300_000 }, { budget: null }]);
    const [limited, unlimited] = keyIds as [string, string];
    await repo.reserveInLedger(reservation(tenantId, unlimited, 2_000_000)); // other keys do not spend this key's budget

    const first = await repo.reserveInLedger(reservation(tenantId, limited, 200_000));
    const denied = await repo.reserveInLedger(reservation(tenantId, limited, 100_001));
    const boundary = await repo.reserveInLedger(reservation(tenantId, limited, 100_000));

    expect(first).toMatchObject({ status: 'reserved', tenantRemainingMicros: 7_800_000, keyRemainingMicros: 100_000 });
    expect(denied).toEqual({ status: 'budget_exceeded', tenantRemainingMicros: 7_800_000, keyRemainingMicros: 100_000 });
    expect(boundary).toMatchObject({ status: 'reserved', tenantRemainingMicros: 7_700_000, keyRemainingMicros: 0 });
    expect(await repo.apiKeyLedgerSpend(limited)).toBe(300_000);
    await voidOpenReservations(tenantId);
  });

  it('answers key_missing for a revoked key, another tenant\'s key or an unknown key, tenant_missing for an unknown tenant, and writes nothing', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000, [{ budget: null, status: 'revoked' }]);
    const other = await seedTenant(1_000_000);

    expect(await repo.reserveInLedger(reservation(tenantId, keyIds[0]!, 1_000))).toEqual({ status: 'key_missing' });
    expect(await repo.reserveInLedger(reservation(tenantId, other.keyIds[0]!, 1_000))).toEqual({ status: 'key_missing' });
    expect(await repo.reserveInLedger(reservation(tenantId, uniqueId('no-key'), 1_000))).toEqual({ status: 'key_missing' });
    expect(await repo.reserveInLedger(reservation(uniqueId('no-tenant'), other.keyIds[0]!, 1_000))).toEqual({ status: 'tenant_missing' });
    expect(await rowsOfTenant(tenantId)).toBe(0);
    expect(await rowsOfTenant(other.tenantId)).toBe(0);
  });

  it('a duplicate request id changes nothing and answers with the original reservation, even after the key is revoked (M3.5)', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000, [{ budget: 800_000 }]);
    const input = reservation(tenantId, keyIds[0]!, 300_000);
    const first = await repo.reserveInLedger(input);

    const again = await repo.reserveInLedger({ ...input, reservedMicros: 900_000 });
    await db('api_key_quota').where('id', keyIds[0]!).update({ status: 'revoked' });
    const afterRevoke = await repo.reserveInLedger(input);

    if (first.status !== 'reserved') throw new Error('expected reserved');
    expect(again).toEqual({ status: 'duplicate', reservedMicros: 300_000, entry: first.entry, tenantRemainingMicros: 700_000, keyRemainingMicros: 500_000 });
    expect(afterRevoke).toMatchObject({ status: 'duplicate', reservedMicros: 300_000 });
    expect(await rowsOfTenant(tenantId)).toBe(1);
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(300_000);
    await voidOpenReservations(tenantId);
  });

  it('refuses a request id already used by another tenant with LedgerRequestConflictError', async () => {
    const a = await seedTenant(1_000_000);
    const b = await seedTenant(1_000_000);
    const input = reservation(a.tenantId, a.keyIds[0]!, 10_000);
    await repo.reserveInLedger(input);

    await expect(repo.reserveInLedger({ ...input, tenantId: b.tenantId, apiKeyId: b.keyIds[0]! })).rejects.toBeInstanceOf(LedgerRequestConflictError);
    expect(await rowsOfTenant(b.tenantId)).toBe(0);
    await voidOpenReservations(a.tenantId);
  });

  it('100 concurrent admissions on one tenant never pass the limit: exactly 33 x 30,000 admitted, ledger usage 990,000', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000, [{ budget: null }, { budget: null }]);

    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => repo.reserveInLedger(reservation(tenantId, keyIds[i % 2]!, 30_000))),
    );

    const byStatus = results.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.status]: (acc[r.status] ?? 0) + 1 }), {});
    expect(byStatus).toEqual({ reserved: 33, insufficient_quota: 67 });
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(990_000);
    expect(await rowsOfTenant(tenantId)).toBe(33);
    expect(results.filter((r) => r.status === 'insufficient_quota').every((r) => 'tenantRemainingMicros' in r && r.tenantRemainingMicros === 10_000)).toBe(true);
    await voidOpenReservations(tenantId);
  });

  it('concurrent admissions on one key never pass its budget (100,000 budget, 20 x 30,000 -> 3 admitted)', async () => {
    const { tenantId, keyIds } = await seedTenant(10_000_000, [{ budget: 100_000 }]);

    const results = await Promise.all(Array.from({ length: 20 }, () => repo.reserveInLedger(reservation(tenantId, keyIds[0]!, 30_000))));

    expect(results.filter((r) => r.status === 'reserved')).toHaveLength(3);
    expect(results.filter((r) => r.status === 'budget_exceeded')).toHaveLength(17);
    expect(await repo.apiKeyLedgerSpend(keyIds[0]!)).toBe(90_000);
    await voidOpenReservations(tenantId);
  });

  it('concurrent admissions of ONE request id reserve once; the others answer duplicate (exactly once)', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000);
    const input = reservation(tenantId, keyIds[0]!, 400_000);

    const results = await Promise.all(Array.from({ length: 20 }, () => repo.reserveInLedger(input)));

    expect(results.filter((r) => r.status === 'reserved')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'duplicate')).toHaveLength(19);
    expect(results.every((r) => r.status === 'reserved' || (r.status === 'duplicate' && r.reservedMicros === 400_000))).toBe(true);
    expect(await rowsOfTenant(tenantId)).toBe(1);
    expect(await repo.tenantLedgerUsage(tenantId)).toBe(400_000);
    await voidOpenReservations(tenantId);
  });

  it('a voided reservation frees its room: the next admission sees the refund', async () => {
    const { tenantId, keyIds } = await seedTenant(1_000_000);
    const big = reservation(tenantId, keyIds[0]!, 800_000);
    await repo.reserveInLedger(big);
    expect(await repo.reserveInLedger(reservation(tenantId, keyIds[0]!, 300_000))).toMatchObject({ status: 'insufficient_quota', tenantRemainingMicros: 200_000 });

    await repo.voidPendingTransaction({ requestId: big.requestId, reason: 'upstream_failed_before_output' });

    expect(await repo.reserveInLedger(reservation(tenantId, keyIds[0]!, 300_000))).toMatchObject({ status: 'reserved', tenantRemainingMicros: 700_000 });
    await voidOpenReservations(tenantId);
  });
});
