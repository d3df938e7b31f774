/**
 * The soak's invariant checks can fail (issue 14): a ledger and Redis written by hand with one
 * planted fault each must be reported under the right invariant, and a consistent ledger must
 * pass. Against the suite's real PostgreSQL and Redis.
 */
import type { Knex } from 'knex';
import type { Redis } from '../../src/redis/client';
import { checkInvariants } from '../../bench/chaos/invariants';
import type { ClientRecord, Subject, SubjectSpec } from '../../bench/chaos/load';
import type { Receiver } from '../helpers/export-receivers';
import { CacheKeys } from '../../src/redis/cache-keys';
import { testDb, testRedis, uniqueId } from '../helpers/services';

const receiver = { store: new Map() } as unknown as Receiver;

function record(over: Partial<ClientRecord>): ClientRecord {
  return { kind: 'chat', tenantId: '', apiKeyId: '', status: 200, stream: false, text: 'hi there', complete: true, disconnected: false, broken: false, failedOver: false, retries: 0, ...over };
}

describe('chaos soak invariants', () => {
  let db: Knex;
  let redis: Redis;
  beforeAll(async () => {
    db = testDb();
    redis = await testRedis();
  });
  afterAll(async () => {
    await db.destroy();
    redis.disconnect();
  });

  async function subject(usedMicros: number, quota = 1_000): Promise<{ s: Subject; spec: SubjectSpec }> {
    const tenantId = uniqueId('inv');
    const apiKeyId = uniqueId('key');
    await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: quota, used_micros: usedMicros });
    await db('api_key_quota').insert({ id: apiKeyId, tenant_id: tenantId, name: 'k', key_hash: uniqueId('hash'), key_prefix: 'sk-bq-', spent_micros: usedMicros });
    await redis.hset(CacheKeys.tenantQuota(tenantId), { limit_micros: String(quota), used_micros: String(usedMicros) });
    await redis.hset(CacheKeys.apiKeyBudget(tenantId, apiKeyId), { budget_micros: '-1', spent_micros: String(usedMicros) });
    return { s: { tenantId, apiKeyId, key: 'unused', exercises: 'none' }, spec: { tenantId, tenant: { quota_limit_micros: quota }, keys: [{ name: 'k', exercises: 'none' }] } };
  }
  const ledger = (s: Subject, requestId: string, status: string, amount: number | null, reserved = 100, tokens = [5, 7]): Promise<unknown> =>
    db('billing_transaction').insert({ request_id: requestId, tenant_id: s.tenantId, api_key_id: s.apiKeyId, kind: 'usage', status, reserved_micros: reserved, amount_micros: amount, prompt_tokens: tokens[0], completion_tokens: tokens[1] });
  const violated = async (records: ClientRecord[], s: Subject, spec: SubjectSpec): Promise<Record<string, number>> => {
    const results = await checkInvariants({ db, redis, receiver, records, subjects: [s], specs: [spec] });
    return Object.fromEntries(results.filter((r) => r.violations.length > 0 && !r.name.startsWith('the export')).map((r) => [r.name, r.violations.length]));
  };

  it('passes a consistent ledger', async () => {
    const { s, spec } = await subject(40);
    await ledger(s, 'ok-1', 'committed', 40);
    const records = [record({ tenantId: s.tenantId, apiKeyId: s.apiKeyId, requestId: 'ok-1', usage: { prompt_tokens: 5, completion_tokens: 7 } })];
    expect(await violated(records, s, spec)).toEqual({});
  });

  it('reports a 200 not billed, a denial billed, a pending row, drift, overspend, a usage mismatch', async () => {
    const { s, spec } = await subject(40, 100);
    await ledger(s, 'billed-denied', 'committed', 150, 100);
    await ledger(s, 'left-pending', 'pending', null, 100);
    await ledger(s, 'wrong-usage', 'committed', 10, 100, [5, 9]);
    const base = { tenantId: s.tenantId, apiKeyId: s.apiKeyId };
    const records = [
      record({ ...base, requestId: 'answered-unbilled' }),
      record({ ...base, requestId: 'billed-denied', status: 429, errorCode: 'insufficient_quota', complete: false, text: '' }),
      record({ ...base, requestId: 'wrong-usage', usage: { prompt_tokens: 5, completion_tokens: 7 } }),
      record({ ...base, requestId: 'partial', stream: true, complete: false, disconnected: true, text: 'several words were received here' }),
    ];
    expect(await violated(records, s, spec)).toEqual({
      'every request denied (nothing billed), settled once, or voided': 2, // answered-unbilled, billed-denied
      'no pending reservation left': 1,
      'per tenant and key: Redis == ledger == synced tables': 2, // tenant and key hold 40, the ledger 260
      'no tenant or key above its limit except recorded overage': 1, // 160 committed > 100 + 50 overage
      'every delivered token billed': 3, // answered-unbilled, wrong-usage, partial without a row
    });
  });
});
