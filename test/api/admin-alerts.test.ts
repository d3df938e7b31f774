/**
 * Budget alert settings over the admin API (M13): `alert_webhook_url` and
 * `alert_thresholds_percent` on tenants and keys, the signing secret shown once (and
 * never by a GET, in the database in plain text, or in a log line), its rotation, and
 * bad input that answers 400 and changes nothing. Real HTTP, PostgreSQL and Redis.
 */
import { ALERT_SECRET_PREFIX } from '../../src/alerts/alert-secrets';
import { createAlertSecretRepository } from '../../src/alerts/alert-secrets';
import { developmentKeyring } from '../../src/codec/keyring';
import { uniqueId } from '../helpers/services';
import { ADMIN_TOKEN, createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

const HOOK = 'https://hooks.example.com/billing?channel=ops';
const secrets = () => createAlertSecretRepository(h.db, developmentKeyring());

async function tenantRow(id: string): Promise<Record<string, unknown> | undefined> {
  return h.db('tenant_quota').where({ tenant_id: id }).first<Record<string, unknown> | undefined>();
}

async function keyRow(id: string): Promise<Record<string, unknown> | undefined> {
  return h.db('api_key_quota').where({ id }).first<Record<string, unknown> | undefined>();
}

function expectSecret(value: unknown): string {
  expect(typeof value).toBe('string');
  expect(value as string).toMatch(new RegExp(`^${ALERT_SECRET_PREFIX}[A-Za-z0-9_-]{43}$`));
  return value as string;
}

describe('tenant alert settings', () => {
  it('POST with a webhook URL and thresholds: both returned, and the signing secret shown once', async () => {
    const id = uniqueId('tenant');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'Acme', quota_limit_micros: 1_000_000, alert_webhook_url: HOOK, alert_thresholds_percent: [50, 90, 120] });

    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(res.body).toMatchObject({ id, alert_webhook_url: HOOK, alert_thresholds_percent: [50, 90, 120] });
    const secret = expectSecret(res.body.alert_webhook_secret);

    const got = await h.admin('GET', `/admin/tenants/${id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ alert_webhook_url: HOOK, alert_thresholds_percent: [50, 90, 120] });
    expect(got.body).not.toHaveProperty('alert_webhook_secret');
    expect(JSON.stringify(got.body)).not.toContain(secret);

    // At rest: ciphertext under the codec key, never the secret itself; it opens to the same secret.
    const row = (await tenantRow(id))!;
    expect(row.alert_secret_key_id).toBe('dev');
    expect(Buffer.isBuffer(row.alert_secret_ciphertext)).toBe(true);
    expect((row.alert_secret_ciphertext as Buffer).includes(Buffer.from(secret))).toBe(false);
    expect(JSON.stringify(row)).not.toContain(secret.slice(ALERT_SECRET_PREFIX.length));
    expect(await secrets().read(id)).toBe(secret);
    expect(h.logLines.join('\n')).not.toContain(secret);
  });

  it('POST without alert fields: no webhook, thresholds 80 and 100, and no secret', async () => {
    const id = uniqueId('tenant');
    const res = await h.admin('POST', '/admin/tenants', { id, name: 'Plain', quota_limit_micros: 5 });

    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ alert_webhook_url: null, alert_thresholds_percent: [80, 100] });
    expect(res.body).not.toHaveProperty('alert_webhook_secret');
    expect(res.headers.get('cache-control')).toBeNull();
    expect(await secrets().read(id)).toBeNull();
  });

  it('PATCH: the first URL generates the secret (shown once); a later URL keeps it; null clears the URL', async () => {
    const id = await createTenant(h, 1_000_000);

    const first = await h.admin('PATCH', `/admin/tenants/${id}`, { alert_webhook_url: HOOK });
    expect(first.status).toBe(200);
    const secret = expectSecret(first.body.alert_webhook_secret);
    expect(first.body).toMatchObject({ alert_webhook_url: HOOK, alert_thresholds_percent: [80, 100], rpm_limit: null });

    const second = await h.admin('PATCH', `/admin/tenants/${id}`, { alert_webhook_url: 'http://127.0.0.1:9/other', alert_thresholds_percent: [90] });
    expect(second.status).toBe(200);
    expect(second.body).not.toHaveProperty('alert_webhook_secret');
    expect(second.body).toMatchObject({ alert_webhook_url: 'http://127.0.0.1:9/other', alert_thresholds_percent: [90] });
    expect(await secrets().read(id)).toBe(secret);

    const cleared = await h.admin('PATCH', `/admin/tenants/${id}`, { alert_webhook_url: null });
    expect(cleared.body).toMatchObject({ alert_webhook_url: null, alert_thresholds_percent: [90] });
    expect(cleared.body).not.toHaveProperty('alert_webhook_secret');
  });

  it('PATCH of alert fields leaves the rate limits as they are, and a limit PATCH leaves the alert settings', async () => {
    const id = await createTenant(h, 1_000_000);
    await h.admin('PATCH', `/admin/tenants/${id}`, { rpm_limit: 60 });
    const alerts = await h.admin('PATCH', `/admin/tenants/${id}`, { alert_thresholds_percent: [70] });
    expect(alerts.body).toMatchObject({ rpm_limit: 60, alert_thresholds_percent: [70] });
    const limits = await h.admin('PATCH', `/admin/tenants/${id}`, { tpm_limit: 1000 });
    expect(limits.body).toMatchObject({ rpm_limit: 60, tpm_limit: 1000, alert_thresholds_percent: [70], alert_webhook_url: null });
  });

  it('new thresholds re-arm the crossed ones that usage is below', async () => {
    const id = await createTenant(h, 1_000_000);
    await h.db('budget_alert_state').insert({ subject_kind: 'tenant', subject_id: id, tenant_id: id, threshold_percent: 80, crossed: true, sequence: 1, crossed_at: h.db.fn.now() });

    await h.admin('PATCH', `/admin/tenants/${id}`, { alert_thresholds_percent: [80, 100] }); // used 0 of 1,000,000

    expect(await h.db('budget_alert_state').where({ subject_id: id }).select('crossed', 'sequence')).toEqual([{ crossed: false, sequence: 1 }]);
  });

  it('POST /admin/tenants/:id/alert-secret rotates the secret: the new one is shown once', async () => {
    const created = await h.admin('POST', '/admin/tenants', { id: uniqueId('tenant'), name: 'Rot', quota_limit_micros: 5, alert_webhook_url: HOOK });
    const id = created.body.id as string;
    const old = expectSecret(created.body.alert_webhook_secret);

    const res = await h.admin('POST', `/admin/tenants/${id}/alert-secret`);

    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    expect(Object.keys(res.body as object).sort()).toEqual(['alert_webhook_secret', 'id']);
    const rotated = expectSecret(res.body.alert_webhook_secret);
    expect(rotated).not.toBe(old);
    expect(await secrets().read(id)).toBe(rotated);
    expect(JSON.stringify((await h.admin('GET', `/admin/tenants/${id}`)).body)).not.toContain(rotated);
    expect(h.logLines.join('\n')).not.toContain(rotated);
  });

  it('rotation: 404 for an unknown tenant, 401 without the admin token (nothing rotated)', async () => {
    const missing = await h.admin('POST', `/admin/tenants/${uniqueId('nobody')}/alert-secret`);
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('not_found');

    const created = await h.admin('POST', '/admin/tenants', { id: uniqueId('tenant'), name: 'Rot', quota_limit_micros: 5, alert_webhook_url: HOOK });
    const id = created.body.id as string;
    const denied = await h.call('POST', `/admin/tenants/${id}/alert-secret`, { headers: { authorization: 'Bearer wrong-token-0123456789' } });
    expect(denied.status).toBe(401);
    expect(await secrets().read(id)).toBe(created.body.alert_webhook_secret as string);
  });
});

describe('API key alert settings', () => {
  it('a key with its own URL: returned by POST and GET; it generates the tenant\'s secret when the tenant has none', async () => {
    const tenantId = await createTenant(h, 1_000_000);
    const res = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'k', budget_micros: 10_000, alert_webhook_url: HOOK, alert_thresholds_percent: [90] });

    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ alert_webhook_url: HOOK, alert_thresholds_percent: [90], budget_micros: 10_000 });
    const secret = expectSecret(res.body.alert_webhook_secret);
    expect(await secrets().read(tenantId)).toBe(secret);

    const got = await h.admin('GET', `/admin/api-keys/${res.body.id as string}`);
    expect(got.body).toMatchObject({ alert_webhook_url: HOOK, alert_thresholds_percent: [90] });
    expect(got.body).not.toHaveProperty('alert_webhook_secret');

    // A second key with a URL: the tenant has a secret now, none is shown.
    const second = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'k2', alert_webhook_url: HOOK });
    expect(second.body).not.toHaveProperty('alert_webhook_secret');
    expect(await secrets().read(tenantId)).toBe(secret);
  });

  it('a key without a URL of its own shows null (it alerts to its tenant\'s) and the default thresholds', async () => {
    const tenantId = await createTenant(h, 1_000_000);
    const key = await createKey(h, tenantId, 5_000);
    const got = await h.admin('GET', `/admin/api-keys/${key.id}`);
    expect(got.body).toMatchObject({ alert_webhook_url: null, alert_thresholds_percent: [80, 100] });
  });

  it('PATCH sets a key\'s URL and thresholds; limits stay', async () => {
    const tenantId = await createTenant(h, 1_000_000);
    const key = await createKey(h, tenantId, 5_000);
    await h.admin('PATCH', `/admin/api-keys/${key.id}`, { rpm_limit: 5 });

    const res = await h.admin('PATCH', `/admin/api-keys/${key.id}`, { alert_webhook_url: HOOK, alert_thresholds_percent: [60, 100] });

    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ rpm_limit: 5, alert_webhook_url: HOOK, alert_thresholds_percent: [60, 100] });
    expectSecret(res.body.alert_webhook_secret);
    expect(await keyRow(key.id)).toMatchObject({ alert_webhook_url: HOOK, alert_thresholds_percent: [60, 100], rpm_limit: 5 });
  });
});

describe('bad alert settings get a 400 and change nothing', () => {
  const badFields: Array<[string, Record<string, unknown>, string]> = [
    ['an ftp URL', { alert_webhook_url: 'ftp://files.example.com/x' }, 'alert_webhook_url'],
    ['not a URL', { alert_webhook_url: 'hooks.example.com/billing' }, 'alert_webhook_url'],
    ['a URL with credentials', { alert_webhook_url: 'https://user:pass@hooks.example.com/x' }, 'alert_webhook_url'],
    ['a URL over 2048 characters', { alert_webhook_url: `https://hooks.example.com/${'a'.repeat(2030)}` }, 'alert_webhook_url'],
    ['a numeric URL', { alert_webhook_url: 42 }, 'alert_webhook_url'],
    ['no thresholds', { alert_thresholds_percent: [] }, 'alert_thresholds_percent'],
    ['a zero threshold', { alert_thresholds_percent: [0, 80] }, 'alert_thresholds_percent[0]'],
    ['a threshold over 1000', { alert_thresholds_percent: [80, 1001] }, 'alert_thresholds_percent[1]'],
    ['a fractional threshold', { alert_thresholds_percent: [80.5] }, 'alert_thresholds_percent[0]'],
    ['a string threshold', { alert_thresholds_percent: ['80'] }, 'alert_thresholds_percent[0]'],
    ['duplicate thresholds', { alert_thresholds_percent: [80, 80] }, 'alert_thresholds_percent'],
    ['unsorted thresholds', { alert_thresholds_percent: [100, 80] }, 'alert_thresholds_percent'],
    ['eleven thresholds', { alert_thresholds_percent: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110] }, 'alert_thresholds_percent'],
    ['null thresholds', { alert_thresholds_percent: null }, 'alert_thresholds_percent'],
  ];

  function expect400(res: { status: number; body: { error: { type: string; code: string; param?: string; message: string } } }, param: string): void {
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ type: 'invalid_request_error', code: 'invalid_request_error', param });
    expect(res.body.error.message).toContain(param);
  }

  it.each(badFields)('POST /admin/tenants with %s: no tenant', async (_label, fields, param) => {
    const id = uniqueId('tenant');
    expect400(await h.admin('POST', '/admin/tenants', { id, name: 'x', quota_limit_micros: 5, ...fields }), param);
    expect(await tenantRow(id)).toBeUndefined();
  });

  it.each(badFields)('PATCH /admin/tenants/:id with %s: the tenant is unchanged and gets no secret', async (_label, fields, param) => {
    const id = await createTenant(h, 1_000_000);
    const before = await tenantRow(id);
    expect400(await h.admin('PATCH', `/admin/tenants/${id}`, { alert_webhook_url: HOOK, ...fields }), param);
    expect(await tenantRow(id)).toEqual(before);
  });

  it.each(badFields)('POST /admin/tenants/:id/api-keys with %s: no key', async (_label, fields, param) => {
    const tenantId = await createTenant(h, 1_000_000);
    expect400(await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'k', ...fields }), param);
    expect(await h.db('api_key_quota').where({ tenant_id: tenantId })).toEqual([]);
    expect(await secrets().read(tenantId)).toBeNull();
  });

  it.each(badFields)('PATCH /admin/api-keys/:id with %s: the key is unchanged', async (_label, fields, param) => {
    const tenantId = await createTenant(h, 1_000_000);
    const key = await createKey(h, tenantId, 5_000);
    const before = await keyRow(key.id);
    expect400(await h.admin('PATCH', `/admin/api-keys/${key.id}`, fields), param);
    expect(await keyRow(key.id)).toEqual(before);
  });

  it('an empty PATCH names every settable field', async () => {
    const id = await createTenant(h, 1_000_000);
    const res = await h.admin('PATCH', `/admin/tenants/${id}`, {});
    expect(res.status).toBe(400);
    expect(res.body.error.message).toContain('alert_webhook_url, alert_thresholds_percent');
  });

  it('PATCH of an unknown tenant or key with alert fields: 404, nothing created', async () => {
    const tenantId = uniqueId('nobody');
    expect((await h.admin('PATCH', `/admin/tenants/${tenantId}`, { alert_webhook_url: HOOK })).status).toBe(404);
    expect(await tenantRow(tenantId)).toBeUndefined();
    expect((await h.admin('PATCH', `/admin/api-keys/${uniqueId('key')}`, { alert_webhook_url: HOOK })).status).toBe(404);
  });

  it('without the admin token: 401, nothing changes', async () => {
    const id = await createTenant(h, 1_000_000);
    const res = await h.call('PATCH', `/admin/tenants/${id}`, {
      headers: { authorization: 'Bearer wrong-token-0123456789', 'content-type': 'application/json' },
      rawBody: JSON.stringify({ alert_webhook_url: HOOK }),
    });
    expect(res.status).toBe(401);
    expect(await tenantRow(id)).toMatchObject({ alert_webhook_url: null, alert_secret_ciphertext: null });
    expect(ADMIN_TOKEN).not.toBe('wrong-token-0123456789');
  });
});
