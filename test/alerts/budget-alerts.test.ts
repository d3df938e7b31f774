/**
 * Budget alerts end to end on the real PostgreSQL, Redis and Temporal dev server (M13, M5):
 * requests admitted by the real QuotaCheckStep and settled by the real BillingStep cross
 * thresholds of the tenant quota and the key budget; each crossing raises one alert,
 * delivered by the budgetAlert workflow (real activities) to a webhook receiver in this
 * test (a node http server), signed with the tenant's secret. Retry intervals are short
 * (options), the rest is production code.
 *
 * Money: prompt 20 tokens (50 micros) + c completion tokens (10 micros each): a request
 * costs 50 + 10c micros, and each is reserved at exactly its cost unless a test says
 * otherwise, so `used` is the sum of the costs.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import type { Knex } from 'knex';
import { Registry } from 'prom-client';
import { createBillingStep } from '../../src/activities/billing-step';
import { createQuotaCheckStep } from '../../src/activities/quota-check-step';
import { createBudgetAlerts, type BudgetAlerts } from '../../src/alerts/budget-alerts';
import { createBudgetAlertActivities } from '../../src/alerts/delivery-activities';
import { ALERT_ID_HEADER, SIGNATURE_HEADER, verifyAlertSignature } from '../../src/alerts/signature';
import { AesGcmPayloadCodec } from '../../src/codec/payload-codec';
import { developmentKeyring } from '../../src/codec/keyring';
import { createDispatcher, type Dispatcher } from '../../src/dispatch/dispatcher';
import { createRepositories, type Repositories } from '../../src/db/repositories';
import { createLogger } from '../../src/log';
import { createBillingMetrics, type BillingMetrics } from '../../src/metrics';
import type { Redis } from '../../src/redis/client';
import { createQuotaScripts } from '../../src/redis/scripts';
import { createAccountServices, type AccountServices } from '../../src/services';
import type { AlertDeliveryPolicy } from '../../src/workflows/budget-alert-definitions';
import { SearchKeys } from '../../src/workflows/search-attributes';
import { decodedHistoryText } from '../helpers/history-text';
import { billedInput, closeTenant, metricValue, stepDeps, type TenantSeed } from '../helpers/activity-deps';
import { testConfig, testDb, testRedis, uniqueId } from '../helpers/services';
import { devServerEnv, testDataConverter, workflowBundle } from '../helpers/temporal';

const workflowsPath = require.resolve('../../src/workflows');

/** Fast retries: 100 ms, 200 ms, 200 ms, ... (the dev server rounds retry timers up to about a second); given up after 4 s. */
const FAST: AlertDeliveryPolicy = { initialIntervalMs: 100, maximumIntervalMs: 200, giveUpAfterMs: 4000, attemptTimeoutMs: 2000 };

interface Received {
  path: string;
  alertId: string;
  signature: string | undefined;
  body: string;
  status: number;
}

let env: TestWorkflowEnvironment;
let db: Knex;
let redis: Redis;
let repositories: Repositories;
let accounts: AccountServices;
let worker: Worker;
let running: Promise<void>;
let receiver: http.Server;
let receiverUrl: string;
const taskQueue = uniqueId('alerts-tq');
const received: Received[] = [];
/** Per receiver path: the status to answer the nth POST (0-based) of an alert. */
const behaviour = new Map<string, (nth: number) => number>();
const logLines: string[] = [];
const log = createLogger('trace', 'alerts-test', { write: (line: string) => void logLines.push(line) });
const workerRegistry = new Registry();
const workerMetrics = createBillingMetrics(workerRegistry);
const seeds: TenantSeed[] = [];
const secrets: string[] = [];

beforeAll(async () => {
  env = await devServerEnv();
  db = testDb();
  redis = await testRedis();
  repositories = createRepositories(db, { bodyKeys: developmentKeyring() });
  const scripts = createQuotaScripts(redis, { ttlSeconds: 3600, registry: new Registry() });
  accounts = createAccountServices({ db, redis, repositories, scripts, log });

  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const alertId = String(req.headers[ALERT_ID_HEADER.toLowerCase()] ?? '');
      const nth = received.filter((r) => r.path === path && r.alertId === alertId).length;
      const status = behaviour.get(path)?.(nth) ?? 200;
      received.push({ path, alertId, signature: req.headers[SIGNATURE_HEADER.toLowerCase()] as string | undefined, body: Buffer.concat(chunks).toString('utf8'), status });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', () => resolve()));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;

  worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    taskQueue,
    workflowBundle: await workflowBundle(workflowsPath),
    dataConverter: testDataConverter(),
    activities: createBudgetAlertActivities({ alerts: repositories.alerts, alertSecrets: repositories.alertSecrets, metrics: workerMetrics, log }),
  });
  running = worker.run();
});

afterAll(async () => {
  worker.shutdown();
  await running;
  for (const seed of seeds) await closeTenant(redis, repositories.billing, seed);
  await new Promise<void>((resolve) => receiver.close(() => resolve()));
  await env.teardown();
  redis.disconnect();
  await db.destroy();
});

function dispatcher(opts: { metrics?: BillingMetrics } = {}): Dispatcher {
  return createDispatcher({ db, outbox: repositories.outbox, client: env.client, taskQueue, metrics: opts.metrics ?? createBillingMetrics(new Registry()), log, drainMinAgeSeconds: 0 });
}

function budgetAlerts(opts: { dispatcher?: Pick<Dispatcher, 'transaction'>; metrics?: BillingMetrics; delivery?: AlertDeliveryPolicy } = {}): BudgetAlerts {
  return createBudgetAlerts({
    alerts: repositories.alerts,
    dispatcher: opts.dispatcher ?? dispatcher(),
    redis,
    metrics: opts.metrics ?? createBillingMetrics(new Registry()),
    log,
    delivery: opts.delivery ?? FAST,
    settingsCacheMs: 0,
  });
}

/** A tenant (quota `limit`) with one key, through the tenant and key services, as the admin API creates them. */
async function tenantWithKey(limit: number, opts: { path?: string; budget?: number | null; keyPath?: string; thresholds?: number[] } = {}): Promise<{ seed: TenantSeed; secret: string }> {
  const tenantId = uniqueId('alerts-t');
  const created = await accounts.tenants.create({
    tenantId,
    name: tenantId,
    quotaLimitMicros: limit,
    alerts: { webhookUrl: opts.path === undefined ? null : `${receiverUrl}${opts.path}`, ...(opts.thresholds ? { thresholdsPercent: opts.thresholds } : {}) },
  });
  const issued = await accounts.apiKeys.issue(tenantId, 'k', opts.budget ?? null, {}, { webhookUrl: opts.keyPath === undefined ? null : `${receiverUrl}${opts.keyPath}` });
  const secret = created.alertWebhookSecret ?? issued.alertWebhookSecret;
  if (secret === undefined) throw new Error('test setup: no signing secret was generated');
  secrets.push(secret);
  const seed = { tenantId, apiKeyIds: [issued.stored.id] };
  seeds.push(seed);
  return { seed, secret };
}

/** The alert repository, noting the subject of every alert-state read (the cheap path makes none). */
function countingReads(reads: string[]): Repositories['alerts'] {
  return {
    ...repositories.alerts,
    crossedAmong: (...args: Parameters<Repositories['alerts']['crossedAmong']>) => {
      reads.push(args[0].id);
      return repositories.alerts.crossedAmong(...args);
    },
  };
}

/**
 * Admits (reserving `reserve`, default the cost) and settles one request costing `cost`
 * micros; `replay` settles it again (a retried BillingStep: Redis answers 'duplicate').
 */
async function settle(seed: TenantSeed, cost: number, alerts: Pick<BudgetAlerts, 'afterSettlement'> | undefined, reserve = cost): Promise<{ replay: () => Promise<unknown> }> {
  if ((cost - 50) % 10 !== 0 || cost < 50) throw new Error(`test setup: a cost of 50 + 10c micros, not ${cost}`);
  const deps = stepDeps(redis, db);
  const input = billedInput(seed.tenantId, seed.apiKeyIds[0]!, { promptTokens: 20, reservedMicros: reserve });
  const decision = await createQuotaCheckStep(deps)(input);
  if (!decision.admitted) throw new Error(`test setup: admission denied (${decision.reason})`);
  const step = createBillingStep({ ...deps, budgetAlerts: alerts });
  const outcome = { status: 'completed' as const, promptTokens: 20, completionTokens: (cost - 50) / 10, tokenSource: 'upstream' as const, channel: 'default' };
  expect(await step(input, outcome)).toMatchObject({ status: 'committed', costMicros: cost });
  return { replay: () => step(input, outcome) };
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const accepted = (path: string) => received.filter((r) => r.path === path && r.status >= 200 && r.status < 300);
const posts = (path: string) => received.filter((r) => r.path === path);

/** Waits until every alert of the tenant has ended (delivered or failed) and its workflow completed. */
async function settledAlerts(tenantId: string, count: number) {
  await until(`${count} alerts of ${tenantId} to end`, async () => {
    const list = await repositories.alerts.listAlerts(tenantId);
    return list.length === count && list.every((a) => a.status !== 'pending');
  });
  const list = await repositories.alerts.listAlerts(tenantId);
  for (const alert of list) await env.client.workflow.getHandle(alert.alertId).result();
  return list;
}

/** The alert ids the receiver accepted on `path`, each checked: a valid signature within 60 s, and the body it announces. */
/**
 * The ids the receiver accepted, each signature checked, sorted: every alert is its own
 * workflow, so two alerts may arrive in either order (receivers order by threshold_percent).
 */
function checkedDeliveries(path: string, secret: string): string[] {
  return accepted(path).map((r) => {
    expect(verifyAlertSignature(secret, r.signature, r.body, { toleranceSeconds: 60 })).toMatchObject({ valid: true });
    const body = JSON.parse(r.body) as { id: string };
    expect(body.id).toBe(r.alertId);
    return r.alertId;
  }).sort();
}

const sorted = (ids: string[]): string[] => [...ids].sort();

describe('tenant quota thresholds', () => {
  it('crossing 80 % then 100 % gives two alerts; settlements above 100 % give no more; a top-up re-arms and the next crossing alerts again', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(100_000, { path });
    const alerts = budgetAlerts();
    const t = seed.tenantId;

    await settle(seed, 40_000, alerts); // 40 %
    expect(await repositories.alerts.listAlerts(t)).toEqual([]);
    await settle(seed, 40_000, alerts); // 80 %
    await settle(seed, 20_000, alerts); // 100 %
    const overage = await settle(seed, 1_050, alerts, 0); // 101.05 %: an overage (reserved nothing, cost 1,050)
    await overage.replay(); // the same settlement retried: read from the counters, still 101.05 %
    const firstTwo = await settledAlerts(t, 2);

    expect(firstTwo.map((a) => [a.alertId, a.thresholdPercent, a.usedMicros, a.limitMicros, a.status])).toEqual([
      [`budget-alert:tenant:${t}:80:1`, 80, 80_000, 100_000, 'delivered'],
      [`budget-alert:tenant:${t}:100:1`, 100, 100_000, 100_000, 'delivered'],
    ]);
    expect(checkedDeliveries(path, secret)).toEqual(sorted([`budget-alert:tenant:${t}:80:1`, `budget-alert:tenant:${t}:100:1`]));
    expect(JSON.parse(accepted(path).find((r) => r.alertId === `budget-alert:tenant:${t}:80:1`)!.body)).toEqual({
      id: `budget-alert:tenant:${t}:80:1`,
      type: 'budget.threshold_crossed',
      tenant_id: t,
      api_key_id: null,
      subject: 'tenant',
      threshold_percent: 80,
      used_micros: 80_000,
      limit_micros: 100_000,
      sequence: 1,
      crossed_at: firstTwo[0]!.crossedAt.toISOString(),
    });

    // Top-up of 50,000: 101,050 of 150,000 is 67.4 %, below both thresholds again.
    await accounts.tenants.topUp(t, 50_000, uniqueId('ref'));
    expect(await db('budget_alert_state').where({ subject_kind: 'tenant', subject_id: t }).orderBy('threshold_percent').select('threshold_percent', 'crossed', 'sequence'))
      .toEqual([{ threshold_percent: 80, crossed: false, sequence: 1 }, { threshold_percent: 100, crossed: false, sequence: 1 }]);
    await settle(seed, 19_050, alerts); // 120,100 of 150,000: 80.07 %
    const all = await settledAlerts(t, 3);

    expect(all[2]).toMatchObject({ alertId: `budget-alert:tenant:${t}:80:2`, thresholdPercent: 80, sequence: 2, usedMicros: 120_100, limitMicros: 150_000, status: 'delivered' });
    expect(checkedDeliveries(path, secret)).toEqual(sorted([`budget-alert:tenant:${t}:80:1`, `budget-alert:tenant:${t}:100:1`, `budget-alert:tenant:${t}:80:2`]));
    expect(posts(path)).toHaveLength(3);
  });

  it('a top-up that leaves usage above a threshold does not re-arm it', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed } = await tenantWithKey(100_000, { path });
    const alerts = budgetAlerts();
    await settle(seed, 95_050, alerts); // 95 %: crosses 80 only
    await settledAlerts(seed.tenantId, 1);

    await accounts.tenants.topUp(seed.tenantId, 10_000, uniqueId('ref')); // 95,050 of 110,000: 86 %
    await settle(seed, 1_050, alerts);

    expect(await db('budget_alert_state').where({ subject_id: seed.tenantId }).select('threshold_percent', 'crossed', 'sequence')).toEqual([{ threshold_percent: 80, crossed: true, sequence: 1 }]);
    expect((await settledAlerts(seed.tenantId, 1)).map((a) => a.alertId)).toEqual([`budget-alert:tenant:${seed.tenantId}:80:1`]);
  });

  it('crossing several thresholds in one settlement raises one alert for each; custom thresholds are used', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(100_000, { path, thresholds: [25, 50, 75] });
    await settle(seed, 60_050, budgetAlerts());
    const list = await settledAlerts(seed.tenantId, 2);
    expect(list.map((a) => a.thresholdPercent)).toEqual([25, 50]);
    expect(checkedDeliveries(path, secret)).toEqual(sorted(list.map((a) => a.alertId)));
  });

  it('a tenant without a webhook URL raises nothing and its settlements read no alert state', async () => {
    const tenantId = uniqueId('alerts-quiet');
    await accounts.tenants.create({ tenantId, name: tenantId, quotaLimitMicros: 100_000 });
    const key = await accounts.apiKeys.issue(tenantId, 'k', 50_000);
    const quiet = { tenantId, apiKeyIds: [key.stored.id] };
    seeds.push(quiet);
    const reads: string[] = [];
    const alerts = createBudgetAlerts({ alerts: countingReads(reads), dispatcher: dispatcher(), redis, metrics: createBillingMetrics(new Registry()), log, delivery: FAST, settingsCacheMs: 60_000 });

    await settle(quiet, 45_050, alerts); // tenant 45 %, key 90 %: no URL anywhere
    expect(reads).toEqual([]);
    expect(await repositories.alerts.listAlerts(tenantId)).toEqual([]);
  });

  it('below every threshold a settlement reads no alert state; above a crossed one, one read and no second alert', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed } = await tenantWithKey(100_000, { path });
    const reads: string[] = [];
    const alerts = createBudgetAlerts({ alerts: countingReads(reads), dispatcher: dispatcher(), redis, metrics: createBillingMetrics(new Registry()), log, delivery: FAST, settingsCacheMs: 60_000 });

    for (let i = 0; i < 5; i += 1) await settle(seed, 10_050, alerts); // up to 50.25 %
    expect(reads).toEqual([]);
    await settle(seed, 30_050, alerts); // 80.3 %: one read, then the crossing
    await settle(seed, 1_050, alerts); // 81.3 %: one read, already crossed
    expect(reads).toEqual([seed.tenantId, seed.tenantId]);
    expect((await settledAlerts(seed.tenantId, 1)).map((a) => a.thresholdPercent)).toEqual([80]);
  });

  it('concurrent settlements that all see the threshold reached raise one alert', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(100_000, { path });
    await settle(seed, 85_050, undefined); // 85 %, without alerts
    const tenantReply = { status: 'applied' as const, deltaMicros: 0, usedMicros: 85_050, remainingMicros: 14_950 };
    const keyReply = { status: 'applied' as const, deltaMicros: 0, spentMicros: 85_050, remainingMicros: null };

    const raised = await Promise.all(Array.from({ length: 12 }, () => budgetAlerts().afterSettlement({ tenantId: seed.tenantId, apiKeyId: seed.apiKeyIds[0]!, tenant: tenantReply, key: keyReply })));

    expect(raised.flat()).toEqual([`budget-alert:tenant:${seed.tenantId}:80:1`]);
    await settledAlerts(seed.tenantId, 1);
    expect(checkedDeliveries(path, secret)).toEqual(sorted([`budget-alert:tenant:${seed.tenantId}:80:1`]));
  });

  it('a failed threshold check never fails the settlement; its replay (a duplicate settlement) reads the counters and raises the alert', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed } = await tenantWithKey(100_000, { path });
    const deps = stepDeps(redis, db);
    const broken = { afterSettlement: () => Promise.reject(new Error('PostgreSQL went away')) };
    const input = billedInput(seed.tenantId, seed.apiKeyIds[0]!, { promptTokens: 20, reservedMicros: 90_050 });
    await createQuotaCheckStep(deps)(input);
    const outcome = { status: 'completed' as const, promptTokens: 20, completionTokens: 9_000, tokenSource: 'upstream' as const, channel: 'default' };

    await expect(createBillingStep({ ...deps, budgetAlerts: broken })(input, outcome)).resolves.toMatchObject({ status: 'committed', costMicros: 90_050 });
    expect(await metricValue(deps.registry, 'billing_budget_alert_check_failures_total')).toBe(1);
    expect(await repositories.alerts.listAlerts(seed.tenantId)).toEqual([]);

    await createBillingStep({ ...deps, budgetAlerts: budgetAlerts() })(input, outcome);
    expect((await settledAlerts(seed.tenantId, 1)).map((a) => [a.thresholdPercent, a.usedMicros])).toEqual([[80, 90_050]]);
  });
});

describe('key budget thresholds', () => {
  it('alerts the key budget to the key\'s own URL, and the tenant quota to the tenant\'s', async () => {
    const tenantPath = `/t-${uniqueId('p')}`;
    const keyPath = `/k-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(1_000_000, { path: tenantPath, budget: 10_000, keyPath });
    const k = seed.apiKeyIds[0]!;

    await settle(seed, 8_050, budgetAlerts()); // key 80.5 %, tenant 0.8 %
    await settle(seed, 1_950, budgetAlerts()); // key 100 %
    const list = await settledAlerts(seed.tenantId, 2);

    expect(list.map((a) => [a.alertId, a.apiKeyId, a.usedMicros, a.limitMicros])).toEqual([
      [`budget-alert:api_key:${k}:80:1`, k, 8_050, 10_000],
      [`budget-alert:api_key:${k}:100:1`, k, 10_000, 10_000],
    ]);
    expect(checkedDeliveries(keyPath, secret)).toEqual(sorted(list.map((a) => a.alertId)));
    expect(JSON.parse(accepted(keyPath)[0]!.body)).toMatchObject({ subject: 'api_key', api_key_id: k, tenant_id: seed.tenantId });
    expect(posts(tenantPath)).toEqual([]);
    const described = await env.client.workflow.getHandle(list[0]!.alertId).describe();
    expect(described.type).toBe('budgetAlert');
    expect(described.typedSearchAttributes.get(SearchKeys.tenantId)).toBe(seed.tenantId);
    expect(described.typedSearchAttributes.get(SearchKeys.apiKeyId)).toBe(k);
  });

  it('a key without a URL of its own alerts to its tenant\'s URL; a key without a budget raises no key alert', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(1_000_000, { path, budget: 20_000 });
    await settle(seed, 16_050, budgetAlerts());
    const list = await settledAlerts(seed.tenantId, 1);
    expect(list.map((a) => a.alertId)).toEqual([`budget-alert:api_key:${seed.apiKeyIds[0]!}:80:1`]);
    expect(checkedDeliveries(path, secret)).toEqual(sorted([list[0]!.alertId]));

    const unlimited = await tenantWithKey(100_000, { path: `/t-${uniqueId('p')}`, budget: null });
    await settle(unlimited.seed, 50_050, budgetAlerts());
    expect(await repositories.alerts.listAlerts(unlimited.seed.tenantId)).toEqual([]);
  });
});

describe('delivery', () => {
  it('a receiver that fails the first two deliveries (500) gets the alert exactly once, each attempt validly signed', async () => {
    const path = `/flaky-${uniqueId('p')}`;
    behaviour.set(path, (nth) => (nth < 2 ? 500 : 204));
    const { seed, secret } = await tenantWithKey(100_000, { path });
    await settle(seed, 80_050, budgetAlerts());
    const [alert] = await settledAlerts(seed.tenantId, 1);

    expect(alert).toMatchObject({ status: 'delivered', attempts: 3, lastHttpStatus: 204 });
    expect(posts(path).map((r) => r.status)).toEqual([500, 500, 204]);
    expect(new Set(posts(path).map((r) => r.body)).size).toBe(1); // the same body on every attempt
    for (const r of posts(path)) expect(verifyAlertSignature(secret, r.signature, r.body, { toleranceSeconds: 60 })).toMatchObject({ valid: true });
    expect(checkedDeliveries(path, secret)).toEqual(sorted([alert!.alertId]));
  });

  it('a 4xx is not retried: one POST, recorded as failed', async () => {
    const path = `/gone-${uniqueId('p')}`;
    behaviour.set(path, () => 410);
    const before = await metricValue(workerRegistry, 'billing_budget_alert_deliveries_total', { outcome: 'failed' }) ?? 0;
    const { seed } = await tenantWithKey(100_000, { path });
    await settle(seed, 80_050, budgetAlerts());
    const [alert] = await settledAlerts(seed.tenantId, 1);

    expect(alert).toMatchObject({ status: 'failed', attempts: 1, lastHttpStatus: 410 });
    expect(alert!.lastError).toContain('AlertWebhookRejected');
    expect(posts(path)).toHaveLength(1);
    expect(await metricValue(workerRegistry, 'billing_budget_alert_deliveries_total', { outcome: 'failed' })).toBe(before + 1);
  });

  it('429 and 408 are retried like a 5xx', async () => {
    const path = `/busy-${uniqueId('p')}`;
    behaviour.set(path, (nth) => [429, 408][nth] ?? 200);
    const { seed } = await tenantWithKey(100_000, { path });
    await settle(seed, 80_050, budgetAlerts());
    expect(await settledAlerts(seed.tenantId, 1)).toMatchObject([{ status: 'delivered', attempts: 3 }]);
    expect(posts(path).map((r) => r.status)).toEqual([429, 408, 200]);
  });

  it('gives up after the bounded delivery time and records it', async () => {
    const path = `/down-${uniqueId('p')}`;
    behaviour.set(path, () => 503);
    const { seed } = await tenantWithKey(100_000, { path });
    const started = Date.now();
    await settle(seed, 80_050, budgetAlerts({ delivery: { ...FAST, giveUpAfterMs: 2500 } }));
    const [alert] = await settledAlerts(seed.tenantId, 1);

    expect(alert).toMatchObject({ status: 'failed', lastHttpStatus: 503 });
    expect(alert!.lastError).toContain('gave up');
    // Retried until the time ran out (the dev server fires retry timers about once a second).
    expect(alert!.attempts).toBeGreaterThanOrEqual(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2500);
    // The attempt in flight when the time ran out may still have reached the receiver.
    expect(posts(path).length).toBeGreaterThanOrEqual(alert!.attempts);
  });

  it('a crash between the crossing\'s commit and the workflow start loses nothing: the drain delivers it once', async () => {
    const path = `/t-${uniqueId('p')}`;
    const { seed, secret } = await tenantWithKey(100_000, { path });
    const real = dispatcher();
    // Commits the crossing and its outbox row, but never sends (what a crash right after the commit leaves).
    const crashing: Pick<Dispatcher, 'transaction'> = { transaction: (fn) => real.transaction(fn, { deferSend: true }) };

    await settle(seed, 85_050, budgetAlerts({ dispatcher: crashing }));
    const [pending] = await repositories.alerts.listAlerts(seed.tenantId);
    expect(pending).toMatchObject({ status: 'pending', thresholdPercent: 80 });
    await new Promise((r) => setTimeout(r, 300));
    expect(posts(path)).toEqual([]);

    await real.drainOutbox({ taskQueue });
    await real.drainOutbox({ taskQueue });
    await settledAlerts(seed.tenantId, 1);
    expect(checkedDeliveries(path, secret)).toEqual(sorted([pending!.alertId]));
    expect(posts(path)).toHaveLength(1);
  });

  it('an unreachable receiver is retried, then given up with no HTTP status recorded', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve())); // nothing listens there now
    const { seed } = await tenantWithKey(100_000, { path: '/unused' });
    await accounts.tenants.update(seed.tenantId, { alerts: { webhookUrl: `http://127.0.0.1:${port}/hook` } });
    const before = await metricValue(workerRegistry, 'billing_budget_alert_webhook_attempts_total', { result: 'network_error' }) ?? 0;

    await settle(seed, 80_050, budgetAlerts({ delivery: { ...FAST, giveUpAfterMs: 2500 } }));
    const [alert] = await settledAlerts(seed.tenantId, 1);

    expect(alert).toMatchObject({ status: 'failed', lastHttpStatus: null });
    expect(alert!.attempts).toBeGreaterThanOrEqual(2);
    expect(alert!.lastError).toContain('gave up');
    expect(await metricValue(workerRegistry, 'billing_budget_alert_webhook_attempts_total', { result: 'network_error' })).toBeGreaterThanOrEqual(before + 2);
  });

  it('a webhook URL removed before delivery: nothing is sent, recorded as undeliverable', async () => {
    const path = `/removed-${uniqueId('p')}`;
    const { seed } = await tenantWithKey(100_000, { path });
    const real = dispatcher();
    await settle(seed, 85_050, budgetAlerts({ dispatcher: { transaction: (fn) => real.transaction(fn, { deferSend: true }) } }));
    await accounts.tenants.update(seed.tenantId, { alerts: { webhookUrl: null } });

    await real.drainOutbox({ taskQueue });
    const [alert] = await settledAlerts(seed.tenantId, 1);

    expect(alert).toMatchObject({ status: 'failed', attempts: 0 });
    expect(alert!.lastError).toContain('AlertUndeliverable: no webhook URL is set any more');
    expect(posts(path)).toEqual([]);
  });

  it('keeps the URL and the secret out of history and out of the logs', async () => {
    const path = `/private-${uniqueId('p')}?token=${uniqueId('tok')}`;
    const { seed, secret } = await tenantWithKey(100_000, { path });
    await settle(seed, 80_050, budgetAlerts());
    const [alert] = await settledAlerts(seed.tenantId, 1);

    const history = await env.client.workflow.getHandle(alert!.alertId).fetchHistory();
    const decoded = await decodedHistoryText(history, new AesGcmPayloadCodec(testConfig().payloadCodecKeys));
    expect(decoded).toContain(alert!.alertId);
    expect(decoded).not.toContain(secret);
    expect(decoded).not.toContain('token=');
    const logs = logLines.join('\n');
    expect(logs).toContain(alert!.alertId);
    for (const s of secrets) expect(logs).not.toContain(s);
    expect(logs).not.toContain(receiverUrl);
  });
});
