/**
 * The consistency check after Redis lost data (M4.3, M12), on a Redis of this file's own
 * (AOF on, as in production) and the shared PostgreSQL: Redis flushed, and Redis restarted
 * from an old AOF while requests were in flight. Either way the check brings every counter
 * back to the ledger exactly, and the requests still in flight then settle exactly.
 *
 * Prices as in consistency-check.test.ts: 1,050 micros reserved per request, 210 billed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Knex } from 'knex';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { freePort } from '../../src/embedded/child';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/embedded/redis';
import { createRedis, type Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import type { BilledRequestInput, UpstreamOutcome } from '../../src/workflows/definitions';
import { billedInput, closeTenant, seedTenant, stepDeps, type StepDeps, type TenantSeed } from '../helpers/activity-deps';
import { consistencyHarness, counterMismatches } from '../helpers/consistency';
import { testDb } from '../helpers/services';

const RESERVED = 1_050;
const COST = 210;
const completed: UpstreamOutcome = { status: 'completed', promptTokens: 20, completionTokens: 16, tokenSource: 'upstream', channel: 'default' };

let dir: string;
let port: number;
let server: EmbeddedRedis;
let redis: Redis;
let db: Knex;
let deps: StepDeps;
const seeds: TenantSeed[] = [];

async function untilReady(client: Redis): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await client.ping()) === 'PONG') return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'billing-consistency-'));
  port = await freePort();
  server = await startEmbeddedRedis({ port, dir: path.join(dir, 'redis') });
  redis = createRedis(server.url);
  redis.on('error', () => undefined); // restarts below: the client reconnects by itself
  await untilReady(redis);
  db = testDb();
  deps = stepDeps(redis, db);
}, 60_000);
afterAll(async () => {
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  redis.disconnect();
  await server.stop();
  await db.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function tenant(): Promise<TenantSeed> {
  const seed = await seedTenant(db, 10_000_000, [{ budgetMicros: 5_000_000 }, { budgetMicros: null }]);
  seeds.push(seed);
  return seed;
}

async function admit(seed: TenantSeed, keyIndex: number): Promise<BilledRequestInput> {
  const input = billedInput(seed.tenantId, seed.apiKeyIds[keyIndex]!, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: RESERVED });
  const decision = await createQuotaCheckStep(deps)(input);
  if (!decision.admitted) throw new Error(`test setup: admission denied (${decision.reason})`);
  return input;
}

const settle = (input: BilledRequestInput) => createBillingStep(deps)(input, completed);
/** BillingStep's ledger half only: the worker died before the Redis settlement. */
const commitOnly = (input: BilledRequestInput) =>
  deps.ledger.commitPendingTransaction({ requestId: input.requestId, amountMicros: COST, promptTokens: 20, completionTokens: 16, tokenSource: 'upstream' });
const usedOf = async (seed: TenantSeed) => Number(await redis.hget(CacheKeys.tenantQuota(seed.tenantId), 'used_micros'));

/** Stops Redis (SIGTERM: the AOF is written out) and starts it again on the same port from `from` (default: its own data). */
async function restartRedis(from?: string): Promise<void> {
  await server.stop();
  if (from !== undefined) {
    fs.rmSync(path.join(dir, 'redis'), { recursive: true, force: true });
    fs.cpSync(from, path.join(dir, 'redis'), { recursive: true });
  }
  server = await startEmbeddedRedis({ port, dir: path.join(dir, 'redis') });
  await untilReady(redis);
}

describe('consistency check after Redis lost data (M4.3, M12)', () => {
  it('Redis flushed: every counter is rebuilt (not drift), and the requests in flight settle exactly', async () => {
    const seed = await tenant();
    for (const keyIndex of [0, 1, 0, 1]) await settle(await admit(seed, keyIndex));
    const inFlight = [await admit(seed, 0), await admit(seed, 1)];
    const committed = await admit(seed, 0);
    await commitOnly(committed);

    await redis.flushall();
    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    expect(summary).toMatchObject({ status: 'ok', driftedSubjects: 0, rebuilt: 3, heals: 0 });
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await usedOf(seed)).toBe(5 * COST + 2 * RESERVED);
    // The workflows carry on: the committed request's settlement applies 0, the others refund to cost.
    expect((await Promise.all([...inFlight, committed].map(settle))).map((r) => r.deltaMicros)).toEqual([COST - RESERVED, COST - RESERVED, 0]);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await usedOf(seed)).toBe(7 * COST);
  });

  it('Redis restarted from an old AOF: the stale counters are confirmed as drift, healed, and the requests in flight settle exactly', async () => {
    const seed = await tenant();
    for (const keyIndex of [0, 1, 0]) await settle(await admit(seed, keyIndex));
    const [a, b] = [await admit(seed, 0), await admit(seed, 1)];

    // The snapshot: Redis as its AOF holds it now.
    await restartRedis();
    const snapshot = path.join(dir, 'aof-snapshot');
    fs.cpSync(path.join(dir, 'redis'), snapshot, { recursive: true });

    // More billed traffic after it.
    await settle(a);
    await settle(await admit(seed, 1));
    const d = await admit(seed, 0); // stays pending
    const e = await admit(seed, 1);
    await commitOnly(e); // committed, Redis settlement still to come

    await restartRedis(snapshot);
    // The old counters: 3 settled + a and b reserved, nothing after.
    expect(await usedOf(seed)).toBe(3 * COST + 2 * RESERVED);

    const h = consistencyHarness(redis, db);
    const summary = await h.check.run({ tenantIds: [seed.tenantId] });

    // Ledger: 3 + a + c + e settled (6 x 210), b and d pending (2 x 1,050) = 3,360; the old counter holds 2,730.
    expect(summary).toMatchObject({ status: 'drift', tenantDriftMicros: 3_360 - 2_730, heals: 3, healed: true, driftedSubjects: 3 });
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    const report = await h.reports.latest();
    expect(report?.drifted.map((entry) => [entry.kind, entry.apiKeyId, entry.redisMicros, entry.ledgerMicros, entry.healed])).toEqual([
      ['tenant', null, 2_730, 3_360, true],
      // key 0: 2 settled + a reserved (old) / 2 settled + a settled + d pending (ledger)
      ['api_key', seed.apiKeyIds[0], 2 * COST + RESERVED, 3 * COST + RESERVED, true],
      // key 1: 1 settled + b reserved (old) / 1 settled + c + e settled + b pending (ledger)
      ['api_key', seed.apiKeyIds[1], COST + RESERVED, 3 * COST + RESERVED, true],
    ]);

    // The workflows still running settle: b (a record from the old AOF), d (no record at all), e (replayed).
    expect((await Promise.all([b, d, e].map(settle))).map((r) => r.deltaMicros)).toEqual([COST - RESERVED, COST - RESERVED, 0]);
    expect(await counterMismatches(redis, db, seed)).toEqual([]);
    expect(await usedOf(seed)).toBe(8 * COST);
  });
});
