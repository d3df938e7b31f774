/**
 * The project on a Redis Cluster (issue 13 item 3), below the HTTP layer: the client follows
 * ASK and MOVED while a tenant's slot migrates between masters; multi-key reads (counter sync,
 * consistency check) are pipelined per node and still answer in order; the consistency check
 * finds and heals drift on tenants of every master; relay streams are read with blocking
 * XREADs on their masters; the sweeper settles stale reservations on every master; a node
 * that lost its script cache still runs every script.
 * Requests go through the real QuotaCheckStep and BillingStep.
 */
import type { Knex } from 'knex';
import type { Cluster } from 'ioredis';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { redisCli } from '../../src/embedded/redis-cluster';
import { masterNodes, pipelinedByNode } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import { keySlot } from '../../src/redis/key-slot';
import { luaScript, QuotaScriptName } from '../../src/redis/scripts';
import { createCounterSync } from '../../src/sync/counter-sync';
import type { BilledRequestInput, UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, cachedCounters, closeTenant, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { consistencyHarness, counterMismatches } from '../helpers/consistency';
import { masterOf, startTestRedisCluster, tenantsOnEveryMaster, type TestRedisCluster } from '../helpers/redis-cluster';
import { testDb, uniqueId } from '../helpers/services';
import { devServerEnv } from '../helpers/temporal';
import { createModelPriceRepository } from '../../src/db/model-price-repository';
import { createReservationSweeper, SweepOutcome, type SweptRow } from '../../src/sweeper';

const RESERVED = 20_000;
const completed = (completionTokens: number): UpstreamOutcome => ({ status: 'completed', promptTokens: 100, completionTokens, tokenSource: 'upstream', channel: 'default' });

let t: TestRedisCluster;
let redis: Cluster;
let db: Knex;
let deps: StepDeps;
const seeds: TenantSeed[] = [];

beforeAll(async () => {
  t = await startTestRedisCluster();
  redis = t.redis;
  db = testDb();
  deps = stepDeps(redis, db);
}, 120_000);

afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed).catch(() => undefined);
  await db?.destroy();
  await t?.stop();
});

/** Tenants (two keys each) whose keys land on every master. */
async function tenantsEverywhere(perMaster: number): Promise<TenantSeed[]> {
  const out: TenantSeed[] = [];
  for (const tenantId of tenantsOnEveryMaster(redis, perMaster, 'cl-t')) {
    const seed = await seedTenant(db, 10_000_000, [{ budgetMicros: 5_000_000 }, { budgetMicros: null }], tenantId);
    seeds.push(seed);
    out.push(seed);
  }
  return out;
}

/** One request admitted through the real step (its ledger row pending). */
async function admit(seed: TenantSeed, keyIndex: number): Promise<BilledRequestInput> {
  const input = billedInput(seed.tenantId, seed.apiKeyIds[keyIndex]!, { reservedMicros: RESERVED, promptTokens: 100, maxOutputTokens: 1000 });
  const decision = await createQuotaCheckStep(deps)(input);
  if (!decision.admitted) throw new Error(`not admitted: ${decision.reason}`);
  return input;
}

/** One request admitted and, unless told otherwise, billed. */
async function billOne(seed: TenantSeed, keyIndex: number, settle = true): Promise<void> {
  const input = await admit(seed, keyIndex);
  if (settle) await createBillingStep(deps)(input, completed(7 + keyIndex));
}

describe('Redis Cluster client (issue 13 item 3)', () => {
  it('follows ASK while a tenant slot migrates and MOVED once it has moved; the counters stay exact', async () => {
    const [seed] = await tenantsEverywhere(1);
    const tenantId = seed!.tenantId;
    await billOne(seed!, 0);
    await billOne(seed!, 1);
    const open = await admit(seed!, 0); // its request record exists: settling it touches only keys that exist
    const quotaKey = CacheKeys.tenantQuota(tenantId);
    const slot = keySlot(quotaKey);
    const source = masterOf(redis, quotaKey);
    const target = masterNodes(redis).map((n) => Number(n.options.port)).find((p) => p !== source)!;
    const id = async (port: number): Promise<string> => (await redisCli(port, ['cluster', 'myid'])).trim();
    const [sourceId, targetId] = [await id(source), await id(target)];
    const askingBefore = await commandCalls(target, 'asking');

    // Migrating: every key of the slot goes to the target; the source answers ASK for them.
    await redisCli(target, ['cluster', 'setslot', String(slot), 'importing', sourceId]);
    await redisCli(source, ['cluster', 'setslot', String(slot), 'migrating', targetId]);
    const keys = (await redisCli(source, ['cluster', 'getkeysinslot', String(slot), '1000'])).split('\n').filter((k) => k !== '');
    expect(keys).toContain(quotaKey);
    expect((await redisCli(source, ['migrate', '127.0.0.1', String(target), '', '0', '5000', 'keys', ...keys])).trim()).toBe('OK');
    // Settlement of the open request: scripts over the moved quota, budget and record, through ASK.
    // (A new admission would wait: Redis answers TRYAGAIN to a multi-key call naming a key that
    // does not exist yet, the new request's record, until the slot has moved; docs/redis-cluster.md.)
    await createBillingStep(deps)(open, completed(9));
    expect(await commandCalls(target, 'asking')).toBeGreaterThan(askingBefore);
    expect(masterOf(redis, quotaKey)).toBe(source); // ASK does not change the client's slot map

    // A second client that loads its slot map now still sends the slot to the source after the move.
    const stale = await t.client();
    const neighbours = tenantsOnEveryMaster(stale, 3, 'nb').map((id) => CacheKeys.tenantQuota(id)).filter((k) => masterOf(stale, k) === source);
    for (const key of neighbours) await redis.hset(key, 'limit_micros', '7');

    // Moved: the slot belongs to the target on every master; the client's next call meets MOVED and updates its map.
    for (const node of masterNodes(redis)) await redisCli(Number(node.options.port), ['cluster', 'setslot', String(slot), 'node', targetId]);
    // The stale client's pipeline to the source: MOVED for the moved slot only, the rest answered; the item is resent.
    expect(masterOf(stale, quotaKey)).toBe(source);
    const mixed = [quotaKey, ...neighbours];
    const replies = await pipelinedByNode(stale, mixed, (k) => k, (pipeline, k) => pipeline.hget(k, 'limit_micros'));
    expect(replies).toEqual([[null, '10000000'], ...neighbours.map(() => [null, '7'])]);
    for (const key of neighbours) await redis.del(key);
    await billOne(seed!, 0);
    await billOne(seed!, 1);
    expect(masterOf(redis, quotaKey)).toBe(target);
    expect(await counterMismatches(redis, db, seed!)).toEqual([]);
    expect((await cachedCounters(redis, tenantId, seed!.apiKeyIds[0]!)).used).toBe((await deps.ledger.tenantUsageSnapshot(tenantId)).usageMicros);
  });

  it('pipelines per node: replies come back in the callers order across masters (a single pipeline across nodes is refused)', async () => {
    const tenants = tenantsOnEveryMaster(redis, 3, 'pipe');
    const keys = tenants.map((id) => CacheKeys.tenantQuota(id));
    for (const [i, key] of keys.entries()) await redis.hset(key, 'limit_micros', String(i));
    const replies = await pipelinedByNode(redis, keys, (k) => k, (pipeline, k) => pipeline.hget(k, 'limit_micros'));
    expect(replies).toEqual(keys.map((_, i) => [null, String(i)]));
    const plain = redis.pipeline();
    for (const key of keys) plain.hget(key, 'limit_micros');
    await expect(plain.exec()).rejects.toThrow(/same slots allocation group/);
    for (const key of keys) await redis.del(key);
  });

  it('counter sync copies the counters of tenants on every master into the tables, exactly', async () => {
    const tenants = await tenantsEverywhere(2);
    for (const seed of tenants) {
      await billOne(seed, 0);
      await billOne(seed, 1);
      await billOne(seed, 1, false);
    }
    const sync = createCounterSync(db, redis, { pageSize: 4 }); // several pages, each across masters
    const tenantIds = tenants.map((s) => s.tenantId);
    expect(await sync.syncTenantQuotas({ tenantIds })).toMatchObject({ subjects: tenants.length, written: tenants.length, notCached: 0, corrupt: 0 });
    expect(await sync.syncApiKeyBudgets({ tenantIds })).toMatchObject({ subjects: 2 * tenants.length, written: 2 * tenants.length, notCached: 0, corrupt: 0 });
    for (const seed of tenants) {
      const row = await db('tenant_quota').where({ tenant_id: seed.tenantId }).first();
      expect(Number(row.used_micros)).toBe((await deps.ledger.tenantUsageSnapshot(seed.tenantId)).usageMicros);
      for (const apiKeyId of seed.apiKeyIds) {
        const keyRow = await db('api_key_quota').where({ id: apiKeyId }).first();
        expect(Number(keyRow.spent_micros)).toBe((await cachedCounters(redis, seed.tenantId, apiKeyId)).spent);
      }
    }
  });

  it('the consistency check finds drift on every master and heals it so that Redis equals the ledger', async () => {
    const tenants = await tenantsEverywhere(2);
    for (const seed of tenants) {
      await billOne(seed, 0);
      await billOne(seed, 1, false); // a reservation in flight survives the heal
    }
    const tenantIds = tenants.map((s) => s.tenantId);
    const h = consistencyHarness(redis, db);
    expect(await h.check.run({ tenantIds })).toMatchObject({ status: 'ok', tenantsChecked: tenants.length, keysChecked: 2 * tenants.length, driftedSubjects: 0 });

    // Drift as a lost write would leave it: tenant counters low, one key counter high, on every master.
    for (const seed of tenants) {
      await redis.hincrby(CacheKeys.tenantQuota(seed.tenantId), 'used_micros', -1_234);
      await redis.hincrby(CacheKeys.apiKeyBudget(seed.tenantId, seed.apiKeyIds[0]!), 'spent_micros', 777);
    }
    const healed = await h.check.run({ tenantIds });
    expect(healed).toMatchObject({ status: 'drift', driftedSubjects: 2 * tenants.length, healed: true, heals: 2 * tenants.length, busy: 0 });
    for (const seed of tenants) expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await h.check.run({ tenantIds })).toMatchObject({ status: 'ok', driftedSubjects: 0 });
  });

  it('relays streams of tenants on every master through blocking XREADs, in order', async () => {
    const tenants = tenantsOnEveryMaster(redis, 2, 'relay');
    const requestIds = tenants.map(() => uniqueId('req'));
    const reads = tenants.map(async (tenantId, i) => {
      const out: unknown[] = [];
      for await (const entry of deps.relay.read(tenantId, requestIds[i]!, { blockMs: 200, idleTimeoutMs: 10_000 })) out.push(entry);
      return out;
    });
    await new Promise((r) => setTimeout(r, 300)); // every reader is blocked before the first write
    for (const [i, tenantId] of tenants.entries()) {
      const writer = deps.relay.writer(tenantId, requestIds[i]!);
      for (let n = 0; n < 5; n++) writer.push({ type: 'chunk', data: { n, tenantId } });
      writer.push({ type: 'done' });
      await writer.flush();
    }
    const results = await Promise.all(reads);
    for (const [i, tenantId] of tenants.entries()) {
      expect(results[i]).toEqual([...Array.from({ length: 5 }, (_, n) => ({ type: 'chunk', data: { n, tenantId } })), { type: 'done' }]);
    }
  });

  it('the sweeper settles stale reservations of tenants on every master, Redis back to the ledger', async () => {
    const env = await devServerEnv();
    try {
      const tenants = await tenantsEverywhere(1);
      const stale = new Map<string, TenantSeed>();
      for (const seed of tenants) {
        for (const keyIndex of [0, 1]) {
          await billOne(seed, keyIndex);
          // Admitted, then abandoned: no workflow will settle it (the one the sweeper exists for).
          const input = await admit(seed, keyIndex);
          stale.set(input.requestId, seed);
          const aged = await db('billing_transaction').where({ request_id: input.requestId }).update({ created_at: db.raw("now() - interval '2 hours'") });
          expect(aged).toBe(1);
        }
      }
      const sweeper = createReservationSweeper({
        ledger: deps.ledger, client: env.client, billingStep: createBillingStep(deps), prices: createModelPriceRepository(db),
        relay: deps.relay, bodies: deps.bodies, metrics: deps.metrics, log: deps.log,
        settings: { pendingAfterSeconds: 3600, maxPerRun: 1000 },
      });
      const rows: SweptRow[] = [];
      await sweeper.sweep({ onRow: (row) => rows.push(row) });
      // No workflow and no output relayed: each is voided from its ledger row, its reservation given back.
      expect(rows.filter((r) => stale.has(r.requestId)).sort((a, b) => a.requestId.localeCompare(b.requestId)))
        .toEqual([...stale.keys()].sort().map((requestId) => ({ requestId, outcome: SweepOutcome.voided, settledFrom: 'ledger' })));
      for (const seed of tenants) expect(await counterMismatches(redis, db, seed)).toEqual([]);
    } finally {
      await env.teardown();
    }
  });

  it('runs the scripts on masters whose script cache is empty (a promoted replica, a restart)', async () => {
    const tenants = await tenantsEverywhere(1);
    for (const node of masterNodes(redis)) await node.script('FLUSH');
    for (const seed of tenants) for (const keyIndex of [0, 1]) await billOne(seed, keyIndex);
    for (const seed of tenants) expect(await counterMismatches(redis, db, seed)).toEqual([]);
    // load() reaches every master, not one random node.
    for (const node of masterNodes(redis)) await node.script('FLUSH');
    await deps.scripts.load();
    const shas = Object.values(QuotaScriptName).map((name) => luaScript(name).sha);
    for (const node of masterNodes(redis)) expect(await node.script('EXISTS', ...shas)).toEqual(shas.map(() => 1));
  });
});

/** How often `port` ran `command` (INFO commandstats). */
async function commandCalls(port: number, command: string): Promise<number> {
  const info = await redisCli(port, ['info', 'commandstats']);
  const match = new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info);
  return Number(match?.[1] ?? 0);
}
