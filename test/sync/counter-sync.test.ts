/**
 * Quota sync and API-key sync (M4.1, M4.2, M10.1: sync cases) on the real Redis and
 * PostgreSQL. Requests go through the real QuotaCheckStep and BillingStep, so the Redis
 * counters the sync copies are the ones production writes; every expected figure is the
 * ledger's (committed + pending), worked out by the ledger itself.
 */
import type { Knex } from 'knex';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createCounterSync } from '../../src/sync/counter-sync';
import type { UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, cachedCounters, closeTenant, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { testDb, testRedis } from '../helpers/services';

let redis: Redis;
let db: Knex;
let deps: StepDeps;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
  deps = stepDeps(redis, db);
});
afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  redis.disconnect();
  await db.destroy();
});

async function seed(limitMicros: number, keys = 1): Promise<TenantSeed> {
  const s = await seedTenant(db, limitMicros, Array.from({ length: keys }, () => ({ budgetMicros: 5_000_000 })));
  seeds.push(s);
  return s;
}

function outcome(promptTokens: number, completionTokens: number): UpstreamOutcome {
  return { status: 'completed', promptTokens, completionTokens, tokenSource: 'upstream', channel: 'default' };
}

/** Admits one request through the real step and settles it (or leaves it pending). */
async function billOne(s: TenantSeed, apiKeyId: string, opts: { settle: boolean; completionTokens?: number } = { settle: true }): Promise<void> {
  const quotaCheck = createQuotaCheckStep(deps);
  const billing = createBillingStep(deps);
  const input = billedInput(s.tenantId, apiKeyId, { reservedMicros: 20_000 });
  const decision = await quotaCheck(input);
  if (!decision.admitted) throw new Error(`not admitted: ${decision.reason}`);
  if (opts.settle) await billing(input, outcome(100, opts.completionTokens ?? 50));
}

async function tableRow(table: 'tenant_quota' | 'api_key_quota', id: string): Promise<{ value: number; syncedAt: Date | null; version: string | null }> {
  const row = table === 'tenant_quota'
    ? await db('tenant_quota').where({ tenant_id: id }).first()
    : await db('api_key_quota').where({ id }).first();
  return { value: Number(table === 'tenant_quota' ? row.used_micros : row.spent_micros), syncedAt: row.synced_at, version: row.synced_version };
}

async function ledgerUsage(s: TenantSeed): Promise<number> {
  return (await deps.ledger.tenantUsageSnapshot(s.tenantId)).usageMicros;
}

describe('quota and API-key sync (M4.1, M4.2)', () => {
  const sync = () => createCounterSync(db, redis);

  it('copies the live counters into tenant_quota and api_key_quota, exactly, with synced_at', async () => {
    const s = await seed(10_000_000, 2);
    await billOne(s, s.apiKeyIds[0]!);
    await billOne(s, s.apiKeyIds[1]!, { settle: true, completionTokens: 7 });
    await billOne(s, s.apiKeyIds[1]!, { settle: false }); // a reservation in flight counts too
    const live = await cachedCounters(redis, s.tenantId, s.apiKeyIds[1]!);
    expect(live.used).toBe(await ledgerUsage(s));

    const before = new Date();
    const quota = await sync().syncTenantQuotas({ tenantIds: [s.tenantId] });
    const keys = await sync().syncApiKeyBudgets({ tenantIds: [s.tenantId] });

    expect(quota).toMatchObject({ job: 'quota', subjects: 1, written: 1, notCached: 0, newerInTable: 0 });
    expect(keys).toMatchObject({ job: 'apikey', subjects: 2, written: 2, notCached: 0 });
    const tenantRow = await tableRow('tenant_quota', s.tenantId);
    expect(tenantRow.value).toBe(live.used);
    expect(tenantRow.syncedAt!.getTime()).toBeGreaterThanOrEqual(before.getTime() - 1000);
    for (const apiKeyId of s.apiKeyIds) {
      const key = await cachedCounters(redis, s.tenantId, apiKeyId);
      expect((await tableRow('api_key_quota', apiKeyId)).value).toBe(key.spent);
      expect(key.spent).toBe((await deps.ledger.apiKeyUsageSnapshot(apiKeyId)).usageMicros);
    }
  });

  it('never writes an older figure over a newer one: a slow run that read first loses to a later run', async () => {
    const s = await seed(10_000_000);
    const apiKeyId = s.apiKeyIds[0]!;
    await billOne(s, apiKeyId);
    // The slow run reads Redis, then waits (its HTTP-to-PostgreSQL leg delayed) until released.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let readDone!: () => void;
    const read = new Promise<void>((resolve) => (readDone = resolve));
    const slowRedis = new Proxy(redis, {
      get(target, prop, receiver) {
        if (prop !== 'pipeline') return Reflect.get(target, prop, receiver) as unknown;
        return () => {
          const pipeline = target.pipeline();
          const exec = pipeline.exec.bind(pipeline);
          pipeline.exec = (async () => {
            const replies = await exec();
            readDone();
            await gate;
            return replies;
          });
          return pipeline;
        };
      },
    });
    const slow = createCounterSync(db, slowRedis).syncTenantQuotas({ tenantIds: [s.tenantId] });
    await read;
    const oldFigure = (await cachedCounters(redis, s.tenantId, apiKeyId)).used!;

    // More traffic moves the counter (and its version), and a fast run writes the new figure.
    await billOne(s, apiKeyId);
    await billOne(s, apiKeyId);
    const fast = await sync().syncTenantQuotas({ tenantIds: [s.tenantId] });
    const newFigure = (await cachedCounters(redis, s.tenantId, apiKeyId)).used!;
    expect(newFigure).toBeGreaterThan(oldFigure);
    expect(fast.written).toBe(1);

    release();
    const late = await slow;
    expect(late).toMatchObject({ written: 0, newerInTable: 1 });
    expect((await tableRow('tenant_quota', s.tenantId)).value).toBe(newFigure);
    expect(newFigure).toBe(await ledgerUsage(s));
  });

  it('leaves a counter that is not cached in Redis alone: the table keeps its last synced figure', async () => {
    const s = await seed(10_000_000);
    await billOne(s, s.apiKeyIds[0]!);
    await sync().syncTenantQuotas({ tenantIds: [s.tenantId] });
    const synced = await tableRow('tenant_quota', s.tenantId);
    await redis.del(CacheKeys.tenantQuota(s.tenantId));

    const run = await sync().syncTenantQuotas({ tenantIds: [s.tenantId] });

    expect(run).toMatchObject({ subjects: 1, written: 0, notCached: 1 });
    expect(await tableRow('tenant_quota', s.tenantId)).toEqual(synced);
  });

  it('a scoped run (the sync after a top-up) touches only the tenants it names', async () => {
    const a = await seed(10_000_000);
    const b = await seed(10_000_000);
    await billOne(a, a.apiKeyIds[0]!);
    await billOne(b, b.apiKeyIds[0]!);

    const run = await sync().syncTenantQuotas({ tenantIds: [a.tenantId] });

    expect(run.subjects).toBe(1);
    expect((await tableRow('tenant_quota', a.tenantId)).value).toBe(await ledgerUsage(a));
    expect(await tableRow('tenant_quota', b.tenantId)).toMatchObject({ value: 0, syncedAt: null });
  });

  it('pages through more subjects than one page, each in one pipeline and one UPDATE', async () => {
    const many = await Promise.all(Array.from({ length: 7 }, () => seed(10_000_000)));
    for (const s of many) await billOne(s, s.apiKeyIds[0]!);
    const tenantIds = many.map((s) => s.tenantId);
    const pipelines: number[] = [];
    const counting = new Proxy(redis, {
      get(target, prop, receiver) {
        if (prop !== 'pipeline') return Reflect.get(target, prop, receiver) as unknown;
        return () => {
          pipelines.push(1);
          return target.pipeline();
        };
      },
    });

    const run = await createCounterSync(db, counting, { pageSize: 3 }).syncTenantQuotas({ tenantIds });

    expect(run).toMatchObject({ subjects: 7, written: 7 });
    expect(pipelines).toHaveLength(3); // 3 + 3 + 1
    for (const s of many) expect((await tableRow('tenant_quota', s.tenantId)).value).toBe(await ledgerUsage(s));
  });

  it('converges while traffic runs: syncs racing settlements end with table == Redis == ledger', async () => {
    const s = await seed(50_000_000, 2);
    let traffic = true;
    const syncs: Promise<unknown>[] = [];
    const syncer = (async () => {
      while (traffic) {
        syncs.push(sync().syncTenantQuotas({ tenantIds: [s.tenantId] }), sync().syncApiKeyBudgets({ tenantIds: [s.tenantId] }));
        await Promise.all(syncs.splice(0));
      }
    })();
    await Promise.all(Array.from({ length: 40 }, (_, i) => billOne(s, s.apiKeyIds[i % 2]!, { settle: true, completionTokens: i })));
    traffic = false;
    await syncer;
    // Quiescence: one more run of each, as the Schedule would make.
    await sync().syncTenantQuotas({ tenantIds: [s.tenantId] });
    await sync().syncApiKeyBudgets({ tenantIds: [s.tenantId] });

    const ledger = await ledgerUsage(s);
    expect((await cachedCounters(redis, s.tenantId, s.apiKeyIds[0]!)).used).toBe(ledger);
    expect((await tableRow('tenant_quota', s.tenantId)).value).toBe(ledger);
    for (const apiKeyId of s.apiKeyIds) {
      const spent = (await deps.ledger.apiKeyUsageSnapshot(apiKeyId)).usageMicros;
      expect((await cachedCounters(redis, s.tenantId, apiKeyId)).spent).toBe(spent);
      expect((await tableRow('api_key_quota', apiKeyId)).value).toBe(spent);
    }
  });

  it('does not copy a counter that is not an integer, names it, and syncs the rest of the page', async () => {
    const bad = await seed(10_000_000);
    const good = await seed(10_000_000);
    await billOne(bad, bad.apiKeyIds[0]!);
    await billOne(good, good.apiKeyIds[0]!);
    await redis.hset(CacheKeys.tenantQuota(bad.tenantId), 'used_micros', '12.5');

    const run = await sync().syncTenantQuotas({ tenantIds: [bad.tenantId, good.tenantId] });

    expect(run).toMatchObject({ subjects: 2, written: 1, corrupt: 1, corruptKeys: [CacheKeys.tenantQuota(bad.tenantId)] });
    expect(await tableRow('tenant_quota', bad.tenantId)).toMatchObject({ value: 0, syncedAt: null });
    expect((await tableRow('tenant_quota', good.tenantId)).value).toBe(await ledgerUsage(good));
    await redis.del(CacheKeys.tenantQuota(bad.tenantId));
  });
});
