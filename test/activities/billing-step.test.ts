/**
 * BillingStep (M3, M10.1) on the real Redis and PostgreSQL. Every request is admitted
 * by the real QuotaCheckStep first, so the pending row and the Redis reservation are
 * exactly what production settles. Prices: 2.5 micros per prompt token, 10 micros per
 * completion token (TEST_PRICE); every expected cost below is worked out by hand and
 * rounded up once per request (billing/pricing.ts).
 */
import type { Knex } from 'knex';
import { get_encoding } from 'tiktoken';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import type { TokenSource } from '../../src/billing/stream-token-accumulator';
import type { Redis } from '../../src/redis/client';
import { CacheKeys } from '../../src/redis/cache-keys';
import type { AdmissionPath } from '../../src/db/ledger-types';
import type { BilledRequestInput, UpstreamOutcome, UpstreamStatus } from '../../src/workflows/definitions';
import { testDb, testRedis } from '../helpers/services';
import {
  billedInput,
  cachedCounters,
  closeTenant,
  ledgerRows,
  metricValue,
  seedTenant,
  stepDeps,
  TEST_PRICE,
  unreachableRedis,
  type StepDeps,
  type TenantSeed,
} from '../helpers/activity-deps';

let redis: Redis;
let db: Knex;
const seeds: TenantSeed[] = [];
const cl100k = get_encoding('cl100k_base');

beforeAll(async () => {
  redis = await testRedis();
  db = testDb();
});
afterAll(async () => {
  const deps = stepDeps(redis, db);
  for (const seed of seeds) await closeTenant(redis, deps.ledger, seed);
  await db.destroy();
  redis.disconnect();
  cl100k.free();
});

/** 21 prompt tokens + the 1,000-token output cap: 52.5 + 10,000 = 10,052.5 -> 10,053 micros. */
const RESERVED = 10_053;

async function tenant(limitMicros = 10_000_000, keys?: Parameters<typeof seedTenant>[2]): Promise<TenantSeed> {
  const seed = await seedTenant(db, limitMicros, keys);
  seeds.push(seed);
  return seed;
}

function steps(deps: StepDeps) {
  return { quotaCheck: createQuotaCheckStep(deps), billing: createBillingStep(deps) };
}

/** A request of 21 prompt tokens, admitted through the real QuotaCheckStep. */
async function admitted(deps: StepDeps, seed: TenantSeed, overrides: Partial<BilledRequestInput> = {}, keyIndex = 0): Promise<{ input: BilledRequestInput; path: AdmissionPath }> {
  const input = billedInput(seed.tenantId, seed.apiKeyIds[keyIndex]!, { promptTokens: 21, reservedMicros: RESERVED, ...overrides });
  const decision = await steps(deps).quotaCheck(input);
  if (!decision.admitted) throw new Error(`test setup: admission denied (${decision.reason})`);
  return { input, path: decision.path };
}

function outcome(status: UpstreamStatus, promptTokens: number, completionTokens: number, tokenSource: TokenSource = 'upstream'): UpstreamOutcome {
  const error = status === 'completed' || status === 'client_cancelled' ? {} : { error: { status: 502, message: `test ${status}`, type: 'upstream_error', code: 'upstream_error' } };
  return { status, promptTokens, completionTokens, tokenSource, channel: 'default', ...error };
}

async function row(requestId: string): Promise<Record<string, unknown>> {
  const found = await db('billing_transaction').where('request_id', requestId).first<Record<string, unknown> | undefined>();
  if (!found) throw new Error(`no ledger row for ${requestId}`);
  return found;
}

function chunk(content: string): { type: 'chunk'; data: unknown } {
  return { type: 'chunk', data: { id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'mock-small', choices: [{ index: 0, delta: { content }, finish_reason: null }] } };
}

describe('BillingStep: settlement of a Redis admission (M3.1-M3.4)', () => {
  it('commits a completed request at its priced cost (21 in, 16 out: 212.5 -> 213) and moves used/spent from the reservation to the cost', async () => {
    const seed = await tenant(10_000_000, [{ budgetMicros: 50_000 }]);
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: RESERVED, spent: RESERVED });

    const result = await steps(deps).billing(input, outcome('completed', 21, 16));

    expect(result).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({
      status: 'committed', reserved_micros: String(RESERVED), amount_micros: '213', prompt_tokens: 21, completion_tokens: 16, token_source: 'upstream',
    });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toEqual({ limit: 10_000_000, used: 213, budget: 50_000, spent: 213 });
    expect(await redis.hgetall(CacheKeys.request(seed.tenantId, input.requestId))).toMatchObject({ tenant_adjusted: String(213 - RESERVED), key_adjusted: String(213 - RESERVED) });
    expect(await metricValue(deps.registry, 'billing_cost_micros_total', { model: 'mock-small' })).toBe(213);
    expect(await metricValue(deps.registry, 'billing_settlement_total', { outcome: 'committed', token_source: 'upstream' })).toBe(1);
  });

  it('issue 11: prices cached prompt tokens at the model\'s cached-input price and keeps every token class in the ledger row', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    // 0.25 micros per cached prompt token (a tenth of the input price).
    const { input } = await admitted(deps, seed, { price: { ...TEST_PRICE, cachedInputPriceMicrosPerMtok: 250_000 } });
    const classes = { cachedPromptTokens: 20, reasoningTokens: 10, audioPromptTokens: 1, audioCompletionTokens: 2 };

    const result = await steps(deps).billing(input, { ...outcome('completed', 21, 16), ...classes });

    // (1 * 2,500,000 + 20 * 250,000 + 16 * 10,000,000) / 1e6 = 2.5 + 5 + 160 = 167.5 -> 168 (213 without the cached price).
    expect(result).toEqual({ status: 'committed', costMicros: 168, deltaMicros: 168 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({
      amount_micros: '168', prompt_tokens: 21, completion_tokens: 16, cached_prompt_tokens: 20, reasoning_tokens: 10, audio_prompt_tokens: 1, audio_completion_tokens: 2,
    });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 168 });
  });

  it('issue 11: an outcome recorded before token classes (none reported) is billed at the input price and keeps 0 classes', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed, { price: { ...TEST_PRICE, cachedInputPriceMicrosPerMtok: 250_000 } });
    expect((await steps(deps).billing(input, outcome('completed', 21, 16))).costMicros).toBe(213);
    expect(await row(input.requestId)).toMatchObject({ cached_prompt_tokens: 0, reasoning_tokens: 0 });
  });

  it('deletes the request body from the body store once settled (idempotent: a replayed settlement finds none)', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    await deps.bodies.put({ requestId: input.requestId, tenantId: seed.tenantId, kind: 'request', body: Buffer.from('{"model":"mock-small"}') });

    await steps(deps).billing(input, outcome('completed', 21, 16));
    expect(await deps.bodies.get(input.requestId, 'request')).toBeUndefined();
    await expect(steps(deps).billing(input, outcome('completed', 21, 16))).resolves.toMatchObject({ status: 'committed', costMicros: 213 });
  });

  it('voids a request that failed before any output: full refund in Redis, amount 0 in the ledger', async () => {
    const seed = await tenant(10_000_000, [{ budgetMicros: 50_000 }]);
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);

    const result = await steps(deps).billing(input, outcome('failed_before_output', 21, 0));

    expect(result).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });
    expect(await row(input.requestId)).toMatchObject({ status: 'voided', amount_micros: '0', failure_reason: 'test failed_before_output', committed_at: null });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
    expect(await metricValue(deps.registry, 'billing_settlement_total', { outcome: 'voided', token_source: 'upstream' })).toBe(1);
    expect(await metricValue(deps.registry, 'billing_cost_micros_total', { model: 'mock-small' })).toBeUndefined();
  });

  it('commits a client-cancelled request for the delivered tokens only (21 in, 5 out by tiktoken: 102.5 -> 103)', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);

    const result = await steps(deps).billing(input, outcome('client_cancelled', 21, 5, 'tiktoken'));

    expect(result).toEqual({ status: 'committed', costMicros: 103, deltaMicros: 103 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({ status: 'committed', amount_micros: '103', completion_tokens: 5, token_source: 'tiktoken' });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 103, spent: 103 });
  });

  it('a replayed settlement (activity retry) answers the same and adjusts nothing a second time (M3.5)', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    const billing = steps(deps).billing;

    const first = await billing(input, outcome('completed', 21, 16));
    const second = await billing(input, outcome('completed', 21, 16));

    expect(second).toEqual(first);
    expect(second).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
    expect(await ledgerRows(db, seed.tenantId)).toHaveLength(1);
    expect(await metricValue(deps.registry, 'billing_cost_micros_total', { model: 'mock-small' })).toBe(213);
  });

  it('a second settlement with DIFFERENT numbers keeps the first commit\'s figures in the ledger, the result and Redis', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    const billing = steps(deps).billing;
    await billing(input, outcome('completed', 21, 16));

    const again = await billing(input, outcome('completed', 30, 900, 'tiktoken'));

    expect(again).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({ amount_micros: '213', prompt_tokens: 21, completion_tokens: 16, token_source: 'upstream' });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
    // A void arriving after the commit does not undo it either.
    expect(await billing(input, outcome('failed_before_output', 0, 0))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({ status: 'committed', amount_micros: '213' });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
  });

  it('a commit arriving after a void keeps the void (no LedgerStateError retried forever, no charge)', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    const billing = steps(deps).billing;
    await billing(input, outcome('failed_before_output', 21, 0));

    expect(await billing(input, outcome('failed_after_output', 21, 3, 'tiktoken'))).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });
    expect(await row(input.requestId)).toMatchObject({ status: 'voided', amount_micros: '0', completion_tokens: null });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
    expect(await metricValue(deps.registry, 'billing_cost_micros_total', { model: 'mock-small' })).toBeUndefined();
  });

  it('records and charges an overage: cost above the reservation (reserved 1,053, cost 2,000) is billed in full', async () => {
    const seed = await tenant(10_000_000, [{ budgetMicros: 5_000 }]);
    const deps = stepDeps(redis, db);
    // 21 prompt tokens + a 100-token cap: 52.5 + 1,000 -> 1,053. The upstream counted 400 prompt tokens (e.g. images).
    const { input } = await admitted(deps, seed, { maxOutputTokens: 100, reservedMicros: 1_053 });

    const result = await steps(deps).billing(input, outcome('completed', 400, 100));

    // 400 x 2.5 + 100 x 10 = 2,000.
    expect(result).toEqual({ status: 'committed', costMicros: 2_000, deltaMicros: 947 });
    expect(await row(input.requestId)).toMatchObject({ reserved_micros: '1053', amount_micros: '2000', prompt_tokens: 400 });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 2_000, spent: 2_000 });
    expect(await metricValue(deps.registry, 'billing_overage_micros_total')).toBe(947);
    expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(2_000);
  });
});

describe('BillingStep: settle to cost whichever path admitted the request (M2.3, M3.2, M4.4)', () => {
  it('settles a PostgreSQL-fallback admission by charging Redis the full cost (the live counters never saw the reservation)', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 100_000 }]);
    const deps = stepDeps(redis, db);
    // The counters were cached before Redis became unreachable for admission.
    await deps.warmup.warmTenant(seed.tenantId);
    await deps.warmup.warmKey(seed.tenantId, seed.apiKeyIds[0]!);
    const down = unreachableRedis();
    try {
      const { input, path } = await admitted(stepDeps(down, db), seed);
      expect(path).toBe('postgres');
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });

      const result = await steps(deps).billing(input, outcome('completed', 21, 16));

      expect(result).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 });
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
      expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(213);
      // Replayed: still charged once.
      await steps(deps).billing(input, outcome('completed', 21, 16));
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
    } finally {
      down.disconnect();
    }
  });

  it('settles a fallback admission whose counters are not cached by warming them from the ledger after the commit (cost counted once, delta 0)', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 100_000 }]);
    const deps = stepDeps(redis, db);
    const down = unreachableRedis();
    try {
      const { input } = await admitted(stepDeps(down, db), seed);

      // The warm-up read the committed 213: nothing is left to apply.
      expect(await steps(deps).billing(input, outcome('completed', 21, 16))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 0 });

      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toEqual({ limit: 1_000_000, used: 213, budget: 100_000, spent: 213 });
      // The settlement's own warm-ups marked the settled cost, so a retry that no longer knows it warmed still applies 0.
      expect(await redis.hgetall(CacheKeys.request(seed.tenantId, input.requestId))).toEqual({
        tenant_counted_micros: '213',
        tenant_warmup_id: await redis.hget(CacheKeys.tenantQuota(seed.tenantId), 'warmup_id'),
        key_counted_micros: '213',
        key_warmup_id: await redis.hget(CacheKeys.apiKeyBudget(seed.tenantId, seed.apiKeyIds[0]!), 'warmup_id'),
        tenant_adjusted: '0',
        key_adjusted: '0',
        cost_micros: '213',
      });
    } finally {
      down.disconnect();
    }
  });

  it('voids a fallback admission without refunding Redis anything (delta 0: Redis never held the reservation)', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 100_000 }]);
    const deps = stepDeps(redis, db);
    await deps.warmup.warmTenant(seed.tenantId);
    await deps.warmup.warmKey(seed.tenantId, seed.apiKeyIds[0]!);
    const down = unreachableRedis();
    try {
      const { input } = await admitted(stepDeps(down, db), seed);

      expect(await steps(deps).billing(input, outcome('failed_before_output', 0, 0))).toEqual({ status: 'voided', costMicros: 0, deltaMicros: 0 });
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
    } finally {
      down.disconnect();
    }
  });

  // Formerly a KNOWN BUG: the warm-up counts a pending fallback reservation into used (it must,
  // or Redis could overspend), and settlement of a 'postgres' admission added the full cost on
  // top. The warm-up now marks the reservations it counted, and settlement subtracts them.
  it('a fallback reservation counted by a later warm-up is not double-charged at settlement', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: null }]);
    const deps = stepDeps(redis, db);
    const down = unreachableRedis();
    try {
      const fallback = await admitted(stepDeps(down, db), seed); // Redis down: 10,053 reserved in the ledger only
      // Redis is back, empty: the next admission warms used from the ledger (10,053) and adds its own.
      const next = await admitted(deps, seed);
      expect(next.path).toBe('redis');
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 2 * RESERVED });

      expect(await steps(deps).billing(fallback.input, outcome('completed', 21, 16))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });

      // Ledger: 213 committed + 10,053 pending = 10,266; Redis agrees (it held 20,319 before the fix).
      expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(10_266);
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 10_266, spent: 10_266 });
    } finally {
      down.disconnect();
    }
  });

  it('Redis lost the tenant and key hashes before settlement: warms from the ledger and ends exact', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 100_000 }]);
    const deps = stepDeps(redis, db);
    const first = await admitted(deps, seed);
    const second = await admitted(deps, seed);
    await redis.del(CacheKeys.tenantQuota(seed.tenantId), CacheKeys.apiKeyBudget(seed.tenantId, seed.apiKeyIds[0]!));

    // Warmed after the commit: the counters already hold the 213, nothing is applied.
    expect(await steps(deps).billing(first.input, outcome('completed', 21, 16))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 0 });
    // Warmed from the ledger: 213 committed + 10,053 still pending.
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toEqual({ limit: 1_000_000, used: 10_266, budget: 100_000, spent: 10_266 });

    // The warm-up counted the second one's reservation pending: settled against it.
    expect(await steps(deps).billing(second.input, outcome('client_cancelled', 21, 5, 'tiktoken'))).toEqual({ status: 'committed', costMicros: 103, deltaMicros: 103 - RESERVED });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 316, spent: 316 });
    expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(316);
    expect(await deps.ledger.apiKeyLedgerSpend(seed.apiKeyIds[0]!)).toBe(316);
  });

  it('Redis lost everything of the tenant (counters and request records): fallback and Redis admissions rebuilt by a warm-up settle exactly', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 200_000 }]);
    const deps = stepDeps(redis, db);
    const down = unreachableRedis();
    try {
      const viaRedis = await admitted(deps, seed);
      const viaFallback = await admitted(stepDeps(down, db), seed);
      expect([viaRedis.path, viaFallback.path]).toEqual(['redis', 'postgres']);
      // Data loss: every key of the tenant's hash tag is gone, the ledger still has both pending.
      const lost = await redis.keys(`bq:${CacheKeys.hashTag(seed.tenantId)}:*`);
      expect(lost.length).toBeGreaterThanOrEqual(3);
      await redis.del(...lost);
      // The next admission warms both counters from the ledger: 2 x 10,053 pending, plus its own.
      const next = await admitted(deps, seed);
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 3 * RESERVED, spent: 3 * RESERVED });

      expect(await steps(deps).billing(viaFallback.input, outcome('completed', 21, 16))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });
      expect(await steps(deps).billing(viaRedis.input, outcome('failed_before_output', 0, 0))).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });

      // Ledger: 213 committed + the next one's 10,053 pending = 10,266.
      expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(10_266);
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toEqual({ limit: 1_000_000, used: 10_266, budget: 200_000, spent: 10_266 });
      expect(next.path).toBe('redis');
    } finally {
      down.disconnect();
    }
  });

  it('a Redis reservation whose ledger insert failed (and could not be released) and whose retry went through the fallback (path postgres) is settled against the Redis reservation', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 100_000 }]);
    const deps = stepDeps(redis, db);
    const input = billedInput(seed.tenantId, seed.apiKeyIds[0]!, { promptTokens: 21, reservedMicros: RESERVED });
    // First attempt: Redis reserves, then PostgreSQL refuses the pending row, and Redis goes away
    // before the reservation can be given back (quota_release fails too).
    const failingLedger = { ...deps.ledger, createPendingTransaction: () => Promise.reject(new Error('connection terminated')) };
    const failingRelease = { ...deps.scripts, release: () => Promise.reject(new Error('Connection is closed.')) };
    await expect(createQuotaCheckStep({ ...deps, ledger: failingLedger, scripts: failingRelease })(input)).rejects.toThrow('connection terminated');
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: RESERVED, spent: RESERVED });
    // The activity retry meets Redis unreachable and admits through the fallback.
    const down = unreachableRedis();
    try {
      const decision = await steps(stepDeps(down, db)).quotaCheck(input);
      expect(decision).toEqual({ admitted: true, reservedMicros: RESERVED, path: 'postgres', duplicate: false });

      expect(await steps(deps).billing(input, outcome('completed', 21, 16))).toEqual({ status: 'committed', costMicros: 213, deltaMicros: 213 - RESERVED });

      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 213, spent: 213 });
      expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(213);
    } finally {
      down.disconnect();
    }
  });

  it('voids: a reservation Redis counted (warm-up after a fallback admission) is refunded in full, one it never counted refunds 0', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: null }]);
    const deps = stepDeps(redis, db);
    const down = unreachableRedis();
    try {
      const counted = await admitted(stepDeps(down, db), seed); // pending in the ledger, Redis not cached yet
      await admitted(deps, seed); // warms from the ledger: counts `counted`, then reserves its own
      const uncounted = await admitted(stepDeps(down, db), seed); // the live counters never see this one
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 2 * RESERVED, spent: 2 * RESERVED });

      expect(await steps(deps).billing(counted.input, outcome('failed_before_output', 0, 0))).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });
      expect(await steps(deps).billing(uncounted.input, outcome('failed_before_output', 0, 0))).toEqual({ status: 'voided', costMicros: 0, deltaMicros: 0 });

      // Left: the Redis admission's 10,053, pending in both.
      expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: RESERVED, spent: RESERVED });
      expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(RESERVED);
    } finally {
      down.disconnect();
    }
  });
});

describe('BillingStep: the upstream step gave up (outcome null): the relay tells what was delivered (M6.3)', () => {
  it('bills the chunks the relay delivered by tiktoken and ends the client\'s stream with an error entry', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    const pieces = ['ledger', ' quota', ' tenant', ' token'];
    expect(cl100k.encode(pieces.join('')).length).toBe(4); // counted independently of the code under test
    const writer = deps.relay.writer(seed.tenantId, input.requestId);
    for (const piece of pieces) writer.push(chunk(piece));
    await writer.flush();

    const result = await steps(deps).billing(input, null);

    // 21 x 2.5 + 4 x 10 = 92.5 -> 93.
    expect(result).toEqual({ status: 'committed', costMicros: 93, deltaMicros: 93 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({ status: 'committed', amount_micros: '93', prompt_tokens: 21, completion_tokens: 4, token_source: 'tiktoken' });
    const entries = await deps.relay.entries(seed.tenantId, input.requestId);
    expect(entries).toHaveLength(5);
    expect(entries[4]).toEqual({ type: 'error', data: { status: 502, message: 'upstream call was interrupted', type: 'upstream_error', code: 'upstream_error' } });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 93, spent: 93 });
  });

  it('voids when the relay is empty and writes a terminal error entry for the client', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);

    const result = await steps(deps).billing(input, null);

    expect(result).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });
    expect(await deps.relay.entries(seed.tenantId, input.requestId)).toEqual([
      { type: 'error', data: { status: 502, message: 'upstream call failed', type: 'upstream_error', code: 'upstream_error' } },
    ]);
    expect(await row(input.requestId)).toMatchObject({ status: 'voided', amount_micros: '0', failure_reason: 'upstream call failed' });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
    // A retry of the settlement sees its own terminal entry: same answer, nothing appended.
    expect(await steps(deps).billing(input, null)).toEqual(result);
    expect(await deps.relay.entries(seed.tenantId, input.requestId)).toHaveLength(1);
  });

  it('a relay that already ended (done) is billed by its relayed usage and gets no second terminal entry', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed);
    const writer = deps.relay.writer(seed.tenantId, input.requestId);
    writer.push(chunk('ledger'));
    writer.push({ type: 'usage', data: { prompt_tokens: 30, completion_tokens: 7, total_tokens: 37 } });
    writer.push({ type: 'done' });
    await writer.flush();

    const result = await steps(deps).billing(input, null);

    // The relayed usage wins over counting the text (M6.3): 30 x 2.5 + 7 x 10 = 145.
    expect(result).toEqual({ status: 'committed', costMicros: 145, deltaMicros: 145 - RESERVED });
    expect(await row(input.requestId)).toMatchObject({ amount_micros: '145', prompt_tokens: 30, completion_tokens: 7, token_source: 'upstream' });
    expect((await deps.relay.entries(seed.tenantId, input.requestId)).map((e) => e.type)).toEqual(['chunk', 'usage', 'done']);
  });

  it('relay mode "result" (Redis was down at admission): voids without touching any relay stream', async () => {
    const seed = await tenant();
    const deps = stepDeps(redis, db);
    const { input } = await admitted(deps, seed, { relayMode: 'result' });

    expect(await steps(deps).billing(input, null)).toEqual({ status: 'voided', costMicros: 0, deltaMicros: -RESERVED });
    expect(await redis.exists(CacheKeys.requestStream(seed.tenantId, input.requestId))).toBe(0);
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toMatchObject({ used: 0, spent: 0 });
  });
});

describe('BillingStep: convergence (M4.4, M12)', () => {
  it('after mixed concurrent settlements Redis used == tenantLedgerUsage and each key\'s spent == apiKeyLedgerSpend, to the micro', async () => {
    const seed = await tenant(1_000_000, [{ budgetMicros: 500_000 }, { budgetMicros: null }]);
    const deps = stepDeps(redis, db);
    const billing = steps(deps).billing;
    // Every request: 20 prompt tokens, a 100-token cap -> 50 + 1,000 = 1,050 reserved.
    const admit = (keyIndex: number) => admitted(deps, seed, { promptTokens: 20, maxOutputTokens: 100, reservedMicros: 1_050 }, keyIndex);
    const plan: Array<[number, UpstreamOutcome | null, number]> = [
      [0, outcome('completed', 20, 16), 210], //              50 + 160
      [0, outcome('failed_before_output', 0, 0), 0], //       voided
      [1, outcome('client_cancelled', 20, 5, 'tiktoken'), 100], // 50 + 50
      [1, outcome('completed', 300, 100), 1_750], //          750 + 1,000: overage
      [0, outcome('completed', 20, 100), 1_050], //           exactly the reservation
      [1, outcome('completed', 21, 16), 213], //              52.5 + 160 -> 213
      [0, null, 0], //                                        upstream gave up, nothing relayed: voided
      [0, outcome('completed', 20, 1), 60], //                50 + 10 (replayed below with other numbers)
    ];
    const requests = await Promise.all(plan.map(([keyIndex]) => admit(keyIndex)));
    const open = await admit(0); // stays pending: 1,050 reserved on key 0

    const results = await Promise.all(plan.map(([, upstream], i) => billing(requests[i]!.input, upstream)));
    expect(results.map((r) => r.costMicros)).toEqual(plan.map(([, , cost]) => cost));
    await billing(requests[7]!.input, outcome('completed', 20, 50));
    await billing(requests[0]!.input, outcome('completed', 20, 16));

    // Tenant: 210 + 100 + 1,750 + 1,050 + 213 + 60 + 1,050 pending = 4,433.
    expect(await deps.ledger.tenantLedgerUsage(seed.tenantId)).toBe(4_433);
    expect(await deps.ledger.apiKeyLedgerSpend(seed.apiKeyIds[0]!)).toBe(2_370);
    expect(await deps.ledger.apiKeyLedgerSpend(seed.apiKeyIds[1]!)).toBe(2_063);
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[0]!)).toEqual({ limit: 1_000_000, used: 4_433, budget: 500_000, spent: 2_370 });
    expect(await cachedCounters(redis, seed.tenantId, seed.apiKeyIds[1]!)).toEqual({ limit: 1_000_000, used: 4_433, budget: null, spent: 2_063 });
    expect((await deps.ledger.tenantUsageSnapshot(seed.tenantId)).pending.map((p) => p.requestId)).toEqual([open.input.requestId]);
  });
});
