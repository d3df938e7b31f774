/**
 * Usage export, exactly once (docs/usage-export.md), on a PostgreSQL database of its own
 * (the outbox is global, so other test files' entries stay out) and local HTTP receivers
 * that enforce each destination's dedupe rule (test/helpers/export-receivers.ts). The
 * invariant checked everywhere: every committed usage entry is in each receiver's store
 * exactly once, and nothing else is.
 */
import type { Knex } from 'knex';
import { createBillingRepository, type BillingRepository } from '../../src/db/billing-repository';
import { migrateLatest } from '../../src/db/migrate';
import {
  lagoDestination, openMeterDestination, stripeDestination, webhookDestination, type ExportDestination,
} from '../../src/export/destinations';
import { createExportRepository, type ExportRepository } from '../../src/export/export-repository';
import { createUsageExporter, type ExporterSettings } from '../../src/export/usage-exporter';
import { createLogger } from '../../src/log';
import { lagoReceiver, openMeterReceiver, stripeReceiver, webhookReceiver, type Receiver } from '../helpers/export-receivers';
import { scratchDatabase, uniqueId } from '../helpers/services';

const SECRET = 'whsec_usage_export_test_secret_0123456789abcdef';
const SOURCE = 'durable-billing-test';
const log = createLogger('silent', 'test');
const settings: ExporterSettings = { maxBatchesPerRun: 100, batchSize: 4, retryInitialSeconds: 1, retryMaxSeconds: 2, leaseSeconds: 600, retentionDays: 35 };

let scratch: { db: Knex; drop: () => Promise<void> };
let db: Knex;
let ledger: BillingRepository;
let repo: ExportRepository;
let receivers: { openmeter: Receiver; lago: Receiver; stripe: Receiver & { firstSeen: Map<string, number> }; webhook: Receiver };
let stripeClock = Date.now();

beforeAll(async () => {
  scratch = await scratchDatabase('usage_export');
  db = scratch.db;
  await migrateLatest(db);
  ledger = createBillingRepository(db);
  repo = createExportRepository(db);
});
afterAll(async () => {
  await scratch.drop();
});

beforeEach(async () => {
  // Each test starts from an empty export (a clean ledger too: the reconciliation reads it).
  await db('usage_export_reconciliation').del();
  await db('usage_export_destination').del();
  await db('usage_export_delivery').del();
  await db('usage_export_outbox').del();
  await db('billing_transaction').del();
  stripeClock = Date.now();
  receivers = {
    openmeter: await openMeterReceiver(),
    lago: await lagoReceiver(),
    stripe: await stripeReceiver(() => stripeClock),
    webhook: await webhookReceiver(SECRET),
  };
});
afterEach(async () => {
  await Promise.all(Object.values(receivers).map((r) => r.close()));
});

function destinations(): ExportDestination[] {
  return [
    openMeterDestination({ url: receivers.openmeter.url, source: SOURCE, type: 'llm.usage', subject: 'tenant', timeoutMs: 5000 }),
    lagoDestination({ url: receivers.lago.url, code: 'llm_usage', idField: 'external_subscription_id', idFrom: 'tenant', timeoutMs: 5000 }),
    stripeDestination({ url: receivers.stripe.url, apiKey: 'sk_test_x', eventName: 'llm_usage', value: 'cost_micros', customers: {}, timeoutMs: 5000 }),
    webhookDestination({ url: `${receivers.webhook.url}/usage`, secret: SECRET, timeoutMs: 5000 }),
  ];
}

const exporter = (dests: ExportDestination[] = destinations()) => createUsageExporter({ repository: repo, destinations: dests, settings, log });

/** Stored keys of a receiver, as the entries' event ids. */
function storedIds(name: keyof typeof receivers): string[] {
  const keys = [...receivers[name].store.keys()];
  return (name === 'openmeter' ? keys.map((k) => k.slice(SOURCE.length + 1)) : keys).sort();
}

/** Commits `n` usage entries of a fresh tenant (cost 1000 + i micros); returns their request ids. */
async function commitEntries(n: number): Promise<string[]> {
  const tenantId = uniqueId('t');
  const keyId = uniqueId('k');
  await db('tenant_quota').insert({ tenant_id: tenantId, name: tenantId, quota_limit_micros: 1_000_000_000 });
  await db('api_key_quota').insert({ id: keyId, tenant_id: tenantId, name: keyId, key_hash: `hash-${keyId}`, key_prefix: 'sk-test' });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const requestId = uniqueId('req');
    await ledger.createPendingTransaction({ requestId, tenantId, apiKeyId: keyId, workflowId: null, model: 'gpt-test', reservedMicros: 50_000, admissionPath: 'redis' });
    await ledger.commitPendingTransaction({ requestId, amountMicros: 1000 + i, promptTokens: 10 + i, completionTokens: 5, tokenSource: 'upstream' });
    ids.push(requestId);
  }
  return ids.sort();
}

async function today(): Promise<string> {
  const row = await db.first<{ d: string }>(db.raw(`to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS d`));
  return row.d;
}

describe('usage export outbox: written in the commit transaction', () => {
  it('a commit writes one outbox row with its figures; a replayed commit writes none; a top-up none', async () => {
    const [id] = await commitEntries(1);
    const entry = (await ledger.findByRequestId(id!))!;
    await ledger.commitPendingTransaction({ requestId: id!, amountMicros: 1000, promptTokens: 10, completionTokens: 5, tokenSource: 'upstream' });
    await ledger.recordTransaction({ requestId: uniqueId('topup'), tenantId: entry.tenantId, kind: 'topup', amountMicros: 5_000_000 });
    const rows = await db('usage_export_outbox').select('*');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ event_id: id, tenant_id: entry.tenantId, api_key_id: entry.apiKeyId, model: 'gpt-test', prompt_tokens: 10, completion_tokens: 5, cost_micros: '1000' });
    expect(Number(rows[0].ledger_id)).toBe(entry.id);
  });

  it('20 concurrent commits of one entry write one outbox row; a voided reservation writes none', async () => {
    const [kept] = await commitEntries(1);
    const tenant = (await ledger.findByRequestId(kept!))!;
    const racing = uniqueId('req');
    const voided = uniqueId('req');
    for (const requestId of [racing, voided]) {
      await ledger.createPendingTransaction({ requestId, tenantId: tenant.tenantId, apiKeyId: tenant.apiKeyId!, workflowId: null, model: 'gpt-test', reservedMicros: 10, admissionPath: 'redis' });
    }
    const results = await Promise.all(Array.from({ length: 20 }, () =>
      ledger.commitPendingTransaction({ requestId: racing, amountMicros: 9, promptTokens: 2, completionTokens: 3, tokenSource: 'upstream' })));
    expect(results.filter((r) => r.committed)).toHaveLength(1);
    await ledger.voidPendingTransaction({ requestId: voided, reason: 'no output delivered' });
    expect((await db('usage_export_outbox').select('event_id')).map((r: { event_id: string }) => r.event_id).sort()).toEqual([kept, racing].sort());
  });

  it('a rolled-back commit leaves no outbox row and exports nothing', async () => {
    const [kept] = await commitEntries(1);
    const tenant = (await ledger.findByRequestId(kept!))!;
    const rolledBack = uniqueId('req');
    await ledger.createPendingTransaction({ requestId: rolledBack, tenantId: tenant.tenantId, apiKeyId: tenant.apiKeyId!, workflowId: null, model: 'gpt-test', reservedMicros: 10, admissionPath: 'redis' });
    await expect(db.transaction(async (trx) => {
      await ledger.commitPendingTransaction({ requestId: rolledBack, amountMicros: 7, promptTokens: 1, completionTokens: 1, tokenSource: 'upstream' }, trx);
      expect(await trx('usage_export_outbox').where('event_id', rolledBack).first()).toBeDefined();
      throw new Error('rolled back after the commit statement');
    })).rejects.toThrow('rolled back');
    expect(await db('usage_export_outbox').where('event_id', rolledBack).first()).toBeUndefined();
    await exporter().run();
    for (const name of ['openmeter', 'lago', 'stripe', 'webhook'] as const) expect(storedIds(name)).toEqual([kept]);
  });
});

describe('usage export: exactly once per destination', () => {
  it('every committed entry reaches every destination once, through a failure and a lost answer mid-batch', async () => {
    const ids = await commitEntries(10);
    // Batches of 4: the 2nd request fails outright, the 3rd is stored but answered 500 (answer lost).
    for (const r of [receivers.openmeter, receivers.lago]) {
      r.fail.add(2);
      r.acceptThenFail.add(3);
    }
    // Stripe and the webhook send one event per request: fail the 2nd event, lose the answer of the 6th.
    for (const r of [receivers.stripe, receivers.webhook]) {
      r.fail.add(2);
      r.acceptThenFail.add(6);
    }
    const first = await exporter().run();
    expect(first.destinations.map((d) => d.outcome)).toEqual(['failed', 'failed', 'failed', 'failed']);
    // Held back by the backoff until it lapses (1 s).
    expect((await exporter().run()).destinations.map((d) => d.outcome)).toEqual(['backoff', 'backoff', 'backoff', 'backoff']);
    await db('usage_export_destination').update({ next_attempt_at: db.raw(`now() - interval '1 second'`) });
    for (let round = 0; round < 3; round++) {
      const run = await exporter().run();
      if (run.destinations.every((d) => d.outcome === 'caught_up')) break;
      await db('usage_export_destination').update({ next_attempt_at: db.raw(`now() - interval '1 second'`) });
    }
    for (const name of ['openmeter', 'lago', 'stripe', 'webhook'] as const) {
      expect(storedIds(name)).toEqual(ids);
      // The lost answers really were resent: the dedupe is what kept them single.
      expect(receivers[name].received).toBeGreaterThan(ids.length);
      const backlog = await repo.backlog(name);
      expect(backlog).toEqual({ undelivered: 0, held: 0, lagSeconds: 0 });
    }
    // Lago said value_already_exist for the lost batch's entries: recorded as duplicates.
    const lagoDuplicates = await db('usage_export_delivery').where({ destination: 'lago', outcome: 'duplicate' }).count<Array<{ count: string }>>('* as count');
    expect(Number(lagoDuplicates[0]!.count)).toBe(4);
    // The events carry the stable id and the exact figures.
    const om = [...receivers.openmeter.store.values()].find((e) => e.id === ids[0])!;
    expect(om).toMatchObject({ specversion: '1.0', source: SOURCE, type: 'llm.usage' });
    const stripe = receivers.stripe.store.get(ids[0]!)!;
    expect(stripe).toMatchObject({ event_name: 'llm_usage', identifier: ids[0] });
    expect(Number(stripe['payload[value]'])).toBeGreaterThanOrEqual(1000);
  });

  it('a crash between commit and send loses nothing: a later exporter sends it, and once', async () => {
    const ids = await commitEntries(3);
    // The process that committed died before any send: a new exporter (another worker) finds the rows.
    await exporter().run();
    await exporter().run();
    for (const name of ['openmeter', 'lago', 'stripe', 'webhook'] as const) expect(storedIds(name)).toEqual(ids);
    expect(receivers.openmeter.received).toBe(3);
  });

  it('a destination that is down holds its place and never blocks the others; it catches up when back', async () => {
    const ids = await commitEntries(6);
    receivers.lago.down = true;
    const run = await exporter().run();
    expect(Object.fromEntries(run.destinations.map((d) => [d.destination, d.outcome]))).toEqual({ openmeter: 'caught_up', lago: 'failed', stripe: 'caught_up', webhook: 'caught_up' });
    for (const name of ['openmeter', 'stripe', 'webhook'] as const) expect(storedIds(name)).toEqual(ids);
    expect(receivers.lago.store.size).toBe(0);
    expect((await repo.backlog('lago')).undelivered).toBe(6);
    const state = await repo.state('lago');
    expect(state.consecutiveFailures).toBe(1);
    expect(state.nextAttemptAt!.getTime()).toBeGreaterThan(Date.now() - 5000);
    // More usage while it is down: the others keep exporting.
    const more = await commitEntries(2);
    await exporter().run();
    expect(storedIds('webhook')).toEqual([...ids, ...more].sort());
    receivers.lago.down = false;
    await db('usage_export_destination').where('destination', 'lago').update({ next_attempt_at: db.raw(`now() - interval '1 second'`) });
    await exporter().run();
    expect(storedIds('lago')).toEqual([...ids, ...more].sort());
    expect((await repo.state('lago')).consecutiveFailures).toBe(0);
  });

  it('Stripe: an entry sent more than 24 h ago and never acknowledged is held, not resent blindly; an operator releases it', async () => {
    const [id] = await commitEntries(1);
    receivers.stripe.acceptThenFail.add(1);
    const stripeOnly = () => exporter(destinations().filter((d) => d.name === 'stripe'));
    expect((await stripeOnly().run()).destinations[0]!.outcome).toBe('failed');
    // A day passes (Stripe's window with it) before the next attempt.
    stripeClock += 25 * 3600 * 1000;
    await db('usage_export_delivery').update({ first_attempt_at: db.raw(`now() - interval '25 hours'`) });
    await db('usage_export_destination').update({ next_attempt_at: null });
    const run = await stripeOnly().run();
    expect(run.destinations[0]).toMatchObject({ outcome: 'caught_up', held: 1, delivered: 0 });
    expect(receivers.stripe.requests).toBe(1);
    expect(await repo.backlog('stripe')).toMatchObject({ undelivered: 1, held: 1 });
    const day = await today();
    expect((await repo.reconcile('stripe', day))).toMatchObject({ ledgerEntries: 1, acknowledged: 0, held: 1, missing: 0 });
    // The operator checked Stripe's meter and found it there: acknowledged, never resent.
    expect(await repo.resolveHeld('stripe', (await ledger.findByRequestId(id!))!.id, 'acknowledged')).toBe(true);
    await stripeOnly().run();
    expect(receivers.stripe.requests).toBe(1);
    expect([...receivers.stripe.store.keys()]).toEqual([id]);
    expect((await repo.reconcile('stripe', day))).toMatchObject({ ledgerEntries: 1, acknowledged: 1, held: 0, missing: 0, unexpected: 0 });
  });

  it('Stripe: a held entry the operator finds missing is resent once, with a new window', async () => {
    const [id] = await commitEntries(1);
    receivers.stripe.fail.add(1);
    const stripeOnly = () => exporter(destinations().filter((d) => d.name === 'stripe'));
    await stripeOnly().run();
    await db('usage_export_delivery').update({ first_attempt_at: db.raw(`now() - interval '25 hours'`) });
    await db('usage_export_destination').update({ next_attempt_at: null });
    expect((await stripeOnly().run()).destinations[0]).toMatchObject({ held: 1 });
    expect(await repo.resolveHeld('stripe', (await ledger.findByRequestId(id!))!.id, 'resend')).toBe(true);
    await stripeOnly().run();
    expect([...receivers.stripe.store.keys()]).toEqual([id]);
    expect(await repo.backlog('stripe')).toEqual({ undelivered: 0, held: 0, lagSeconds: 0 });
  });
});

describe('usage export reconciliation', () => {
  it('reports no difference when clean, and the entries a destination has no acknowledgement of', async () => {
    const ids = await commitEntries(5);
    await exporter().run();
    const day = await today();
    const clean = await exporter().reconcile(day);
    expect(clean.map((r) => [r.destination, r.ledgerEntries, r.acknowledged, r.missing, r.unexpected, r.held])).toEqual([
      ['openmeter', 5, 5, 0, 0, 0], ['lago', 5, 5, 0, 0, 0], ['stripe', 5, 5, 0, 0, 0], ['webhook', 5, 5, 0, 0, 0],
    ]);
    // The webhook's acknowledgement of one entry is lost (deleted from its delivered records).
    const gone = (await ledger.findByRequestId(ids[2]!))!.id;
    await db('usage_export_delivery').where({ destination: 'webhook', ledger_id: gone }).del();
    const after = await exporter().reconcile(day);
    const webhook = after.find((r) => r.destination === 'webhook')!;
    expect(webhook).toMatchObject({ ledgerEntries: 5, acknowledged: 4, missing: 1, unexpected: 0, held: 0 });
    expect(webhook.sample.missing).toEqual([gone]);
    expect(after.filter((r) => r.destination !== 'webhook').every((r) => r.missing + r.unexpected + r.held === 0)).toBe(true);
    // Stored, newest day first, and summed for the gauge.
    expect((await repo.reconciliations({ day, limit: 10 })).map((r) => r.destination).sort()).toEqual(['lago', 'openmeter', 'stripe', 'webhook']);
    expect(await repo.latestDifferences()).toEqual({ openmeter: 0, lago: 0, stripe: 0, webhook: 1 });
    // A ledger amount that no longer matches what was sent is an unexpected acknowledgement.
    await db('billing_transaction').where('id', (await ledger.findByRequestId(ids[0]!))!.id).update({ amount_micros: 999_999 });
    const changed = (await exporter().reconcile(day)).find((r) => r.destination === 'lago')!;
    expect(changed).toMatchObject({ missing: 0, unexpected: 1 });
  });
});

describe('usage export outbox retention', () => {
  it('prunes outbox rows past the retention that every destination acknowledged, and keeps the others', async () => {
    const ids = await commitEntries(3);
    receivers.stripe.fail.add(3);
    await exporter().run();
    const ledgerIds = await Promise.all(ids.map(async (id) => (await ledger.findByRequestId(id))!.id));
    // Stripe failed on the third entry it sent: that one is not acknowledged there.
    const unackedAtStripe = (await repo.due('stripe', 10)).map((e) => e.ledgerId);
    expect(unackedAtStripe).toHaveLength(1);
    await db('usage_export_outbox').update({ committed_at: db.raw(`now() - interval '40 days'`) });
    // Stripe is in its backoff: the two entries acknowledged everywhere go, the third stays.
    const run = await exporter().run();
    expect(run.pruned).toBe(2);
    expect((await db('usage_export_outbox').select('ledger_id')).map((r: { ledger_id: string }) => Number(r.ledger_id))).toEqual(unackedAtStripe);
    // Stripe back: it gets the third (once), and then it goes too.
    await db('usage_export_destination').update({ next_attempt_at: null });
    expect((await exporter().run()).pruned).toBe(1);
    expect(await db('usage_export_outbox').count<Array<{ count: string }>>('* as count')).toEqual([{ count: '0' }]);
    expect(await db('usage_export_delivery').count<Array<{ count: string }>>('* as count')).toEqual([{ count: '0' }]);
    expect(ledgerIds).toHaveLength(3);
    // Nothing was sent twice along the way.
    expect(storedIds('stripe')).toEqual(ids);
  });

  it('keeps an old outbox row a destination has not acknowledged (held included)', async () => {
    const [id] = await commitEntries(1);
    receivers.lago.down = true;
    await exporter().run();
    await db('usage_export_outbox').update({ committed_at: db.raw(`now() - interval '40 days'`) });
    await db('usage_export_destination').update({ next_attempt_at: db.raw(`now() + interval '1 hour'`) });
    expect((await exporter().run()).pruned).toBe(0);
    expect((await db('usage_export_outbox').select('event_id')).map((r: { event_id: string }) => r.event_id)).toEqual([id]);
  });
});
