/**
 * The body store (issue 8) end to end: a ~10 MB request with an inline base64 image is
 * admitted, reaches the upstream unchanged and is billed once, its body row gone after
 * settlement; a body missing when the upstream call needs it voids the request with a 502.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { startRoles, type RunningRoles } from '../../src/roles';
import { startMockUpstream } from '../../src/upstream/mock/server';
import { ADMIN_TOKEN, chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { bodyRowsAfterSettlement, settled } from '../helpers/ledger';
import { temporalAddress, testConfig, testDb, uniqueId } from '../helpers/services';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

let db: Knex;
beforeAll(() => {
  db = testDb();
});
afterAll(async () => {
  await db.destroy();
});

async function usageRows(tenantId: string): Promise<Array<Record<string, unknown>>> {
  return db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' });
}

describe('request bodies live in the body store', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp();
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  it('a ~10 MB request with an inline base64 image is admitted, reaches the upstream byte for byte and is billed once', async () => {
    const t = await app.tenant({ quotaMicros: 100_000_000 });
    const image = randomBytes(7_500_000).toString('base64');
    const messages = [{ role: 'user', content: [{ type: 'text', text: 'what is in this picture? [mock:tokens=3]' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${image}` } }] }];
    const body = JSON.stringify({ model: TEST_MODEL, messages });
    expect(body.length).toBeGreaterThan(10_000_000);

    const res = await chat(app, t.key, body);

    expect(res.status).toBe(200);
    expect(app.mock.stats().lastRequest).toMatchObject({ messagesSha256: sha256(JSON.stringify(messages)) });
    expect(app.mock.stats().lastRequest!.bytes).toBeGreaterThan(10_000_000);
    await settled(db, t.tenantId);
    const rows = await usageRows(t.tenantId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ status: 'committed', completion_tokens: 3 });
    expect(await bodyRowsAfterSettlement(db, res.headers.get('x-request-id')!)).toBe(0);
  }, 60_000);
});

describe('a request body missing when the upstream call needs it', () => {
  it('fails the request: a 502, voided, nothing billed, the upstream never called', async () => {
    // The API alone first: the request is stored and waits for a worker; its body is deleted before one comes.
    const taskQueue = uniqueId('bodies-q');
    const api = await startTestApp({ workers: false, taskQueue });
    const mock = await startMockUpstream({ port: 0 });
    let worker: RunningRoles | undefined;
    try {
      const t = await api.tenant();
      const pending = chat(api, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: 'this body will vanish' }] });
      const deadline = Date.now() + 20_000;
      let requestId: string | undefined;
      while (requestId === undefined && Date.now() < deadline) {
        const row = await db('request_body').where({ tenant_id: t.tenantId, kind: 'request' }).first<{ request_id: string } | undefined>();
        if (row) requestId = row.request_id;
        else await new Promise((r) => setTimeout(r, 20));
      }
      expect(requestId).toBeDefined();
      await db('request_body').where({ request_id: requestId }).del();

      const env = testConfig();
      const config = loadConfig({ ...process.env, ADMIN_TOKEN, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent' });
      worker = await startRoles(config, { temporalAddress: temporalAddress(), redisUrl: env.REDIS_URL!, databaseUrl: env.DATABASE_URL! }, {
        api: false, worker: true, upstreamBaseUrl: mock.url, taskQueue, pollIntervalMs: 100,
      }, createLogger(config.LOG_LEVEL, 'e2e-worker'));
      const res = await pending;

      expect(res.status).toBe(502);
      expect(res.json()).toMatchObject({ error: { type: 'server_error' } });
      expect(mock.stats().requests).toBe(0);
      await settled(db, t.tenantId);
      const rows = await usageRows(t.tenantId);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ status: 'voided', amount_micros: '0' });
      expect(res.headers.get('x-request-id')).toBe(requestId);
    } finally {
      await worker?.stop();
      await api.stop();
      await mock.close();
    }
  }, 60_000);
});
