/**
 * Budget windows on the admin API (issue 12): set on POST/PATCH of tenants and keys in the
 * single-window form (budget_period + budget_limit_micros) or as several windows
 * (budget_windows), aligned in budget_timezone; GET shows each current window with its
 * spend (the ledger's when its counter is not cached, else the live counter); bad input
 * is a 400 that changes nothing.
 */
import { createBillingRepository } from '../../src/db/billing-repository';
import { windowBounds } from '../../src/billing/budget-window-period';
import { CacheKeys } from '../../src/redis/cache-keys';
import { budgetWindowId } from '../../src/services/budget-windows';
import { uniqueId } from '../helpers/services';
import { createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});
afterAll(async () => {
  await h.close();
});

const DAY = 86_400_000;

async function windowRows(kind: 'tenant' | 'api_key', id: string): Promise<Array<{ period: string; limit_micros: string; timezone: string }>> {
  return h.db('budget_window').where({ subject_kind: kind, subject_id: id }).orderBy('period').select('period', 'limit_micros', 'timezone');
}

describe('tenants', () => {
  it('POST with a daily window in Asia/Tokyo: the window runs 15:00 UTC to 15:00 UTC and starts empty', async () => {
    const id = uniqueId('tenant');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'Tokyo', quota_limit_micros: 9_000_000, budget_period: 'daily', budget_limit_micros: 1_000_000, budget_timezone: 'Asia/Tokyo' });

    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ id, quota_limit_micros: 9_000_000, budget_period: 'daily', budget_timezone: 'Asia/Tokyo' });
    const [window] = res.body.budget_windows as Array<Record<string, unknown>>;
    const start = Date.parse(window!.window_start as string);
    expect(new Date(start).getUTCHours()).toBe(15);
    expect(Date.parse(window!.window_end as string) - start).toBe(DAY);
    expect(start <= Date.now() && Date.now() < start + DAY).toBe(true);
    expect(window).toMatchObject({ period: 'daily', limit_micros: 1_000_000, used_micros: 0, remaining_micros: 1_000_000 });
    expect(await windowRows('tenant', id)).toEqual([{ period: 'daily', limit_micros: '1000000', timezone: 'Asia/Tokyo' }]);
  });

  it("PATCH changes a cap and keeps the window's spend; budget_period none clears every window", async () => {
    const id = await createTenant(h, 5_000_000);
    expect((await h.admin('PATCH', `/admin/tenants/${id}`, { budget_windows: [{ period: 'weekly', limit_micros: 100 }] })).status).toBe(200);
    // A spend of 70 recorded in the ledger under this week's window.
    const week = windowBounds('weekly', 'UTC', Date.now());
    const keyId = (await createKey(h, id)).id;
    await createBillingRepository(h.db).createPendingTransaction({
      requestId: uniqueId('req'), tenantId: id, apiKeyId: keyId, workflowId: null, model: 'gpt-4o', reservedMicros: 70, admissionPath: 'redis',
      budgetWindows: [budgetWindowId('tenant', id, 'weekly', week.startMs)],
    });

    const raised = await h.admin('PATCH', `/admin/tenants/${id}`, { budget_period: 'weekly', budget_limit_micros: 250 });
    expect(raised.status).toBe(200);
    expect(raised.body.budget_windows).toEqual([
      { period: 'weekly', limit_micros: 250, window_start: new Date(week.startMs).toISOString(), window_end: new Date(week.endMs).toISOString(), used_micros: 70, remaining_micros: 180 },
    ]);

    const cleared = await h.admin('PATCH', `/admin/tenants/${id}`, { budget_period: 'none' });
    expect(cleared.body).toMatchObject({ budget_period: 'none', budget_timezone: 'UTC', budget_windows: [] });
    expect(await windowRows('tenant', id)).toEqual([]);
    await h.db('billing_transaction').where({ tenant_id: id }).update({ status: 'voided', amount_micros: 0, voided_at: h.db.fn.now() });
  });
});

describe('API keys', () => {
  it('holds a daily AND a monthly window; GET shows both with the live counter when cached', async () => {
    const tenantId = await createTenant(h, 10_000_000);
    const res = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, {
      name: 'two windows',
      budget_windows: [{ period: 'monthly', limit_micros: 3_000 }, { period: 'daily', limit_micros: 1_000 }],
      budget_timezone: 'Europe/Berlin',
    });
    expect(res.status).toBe(201);
    const id = res.body.id as string;
    expect(res.body.budget_period).toBe('daily'); // the shortest window
    expect((res.body.budget_windows as Array<{ period: string }>).map((w) => w.period)).toEqual(['daily', 'monthly']);

    const day = windowBounds('daily', 'Europe/Berlin', Date.now());
    await h.testRedis.hset(CacheKeys.budgetWindow(tenantId, budgetWindowId('api_key', id, 'daily', day.startMs)), { used_micros: '400', build: 'test', version: '1' });
    const got = await h.admin('GET', `/admin/api-keys/${id}`);
    expect(got.body.budget_timezone).toBe('Europe/Berlin');
    expect(got.body.budget_windows).toEqual([
      { period: 'daily', limit_micros: 1_000, window_start: new Date(day.startMs).toISOString(), window_end: new Date(day.endMs).toISOString(), used_micros: 400, remaining_micros: 600 },
      expect.objectContaining({ period: 'monthly', limit_micros: 3_000, used_micros: 0, remaining_micros: 3_000 }),
    ]);
    await h.testRedis.del(CacheKeys.budgetWindow(tenantId, budgetWindowId('api_key', id, 'daily', day.startMs)));

    // The zone alone moves every window of the key.
    const moved = await h.admin('PATCH', `/admin/api-keys/${id}`, { budget_timezone: 'America/New_York' });
    expect(moved.status).toBe(200);
    expect(await windowRows('api_key', id)).toEqual([
      { period: 'daily', limit_micros: '1000', timezone: 'America/New_York' },
      { period: 'monthly', limit_micros: '3000', timezone: 'America/New_York' },
    ]);
  });
});

describe('bad input: 400, nothing changes', () => {
  const bad: Array<[string, Record<string, unknown>, string]> = [
    ['an unknown time zone', { budget_period: 'daily', budget_limit_micros: 10, budget_timezone: 'Mars/Olympus' }, 'budget_timezone'],
    ['an offset instead of a zone', { budget_period: 'daily', budget_limit_micros: 10, budget_timezone: '+09:00' }, 'budget_timezone'],
    ['an unknown period', { budget_period: 'hourly', budget_limit_micros: 10 }, 'budget_period'],
    ['a period without its cap', { budget_period: 'daily' }, 'budget_limit_micros'],
    ['a cap without a period', { budget_limit_micros: 10 }, 'budget_limit_micros'],
    ['both forms', { budget_period: 'daily', budget_limit_micros: 10, budget_windows: [] }, 'budget_windows'],
    ['a period twice', { budget_windows: [{ period: 'daily', limit_micros: 1 }, { period: 'daily', limit_micros: 2 }] }, 'budget_windows'],
    ['a negative cap', { budget_windows: [{ period: 'daily', limit_micros: -1 }] }, 'budget_windows[0].limit_micros'],
    ['a fractional cap', { budget_period: 'weekly', budget_limit_micros: 1.5 }, 'budget_limit_micros'],
    ['a zone and no window', { budget_timezone: 'Asia/Tokyo' }, 'budget_timezone'],
  ];

  it.each(bad)('PATCH of a key with %s', async (_label, body, param) => {
    const tenantId = await createTenant(h, 1_000);
    const { id } = await createKey(h, tenantId);
    const before = await h.admin('GET', `/admin/api-keys/${id}`);

    const res = await h.admin('PATCH', `/admin/api-keys/${id}`, { ...body, rpm_limit: 7 });

    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', param });
    expect(await h.admin('GET', `/admin/api-keys/${id}`)).toMatchObject({ body: before.body }); // rpm_limit not set either
    expect(await windowRows('api_key', id)).toEqual([]);
  });

  it.each(bad)('POST of a tenant with %s', async (_label, body, param) => {
    const id = uniqueId('tenant');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'x', quota_limit_micros: 1, ...body });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ param });
    expect(await h.db('tenant_quota').where({ tenant_id: id }).first()).toBeUndefined();
  });

  it('PATCH of an unknown key is a 404 that stores no window', async () => {
    const res = await h.admin('PATCH', '/admin/api-keys/key_000000000000000000000000', { budget_period: 'daily', budget_limit_micros: 5 });
    expect(res.status).toBe(404);
    expect(await windowRows('api_key', 'key_000000000000000000000000')).toEqual([]);
  });
});
