/**
 * Secrets and prompts never reach logs (docs/architecture.md "Invariants"), while
 * every key operation is logged with its request, tenant and workflow ids (M13).
 */
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDb } from '../helpers/services';

describe('log hygiene (M13)', () => {
  const lines: string[] = [];
  let app: TestApp;
  beforeAll(async () => {
    app = await startTestApp({ logLines: lines });
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
  });

  it('logs admission and settlement with ids, never the API key or the prompt', async () => {
    const t = await app.tenant();
    const prompt = 'my secret diagnosis is XYZZY-4242';
    const ok = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: prompt }] });
    const failed = await chat(app, t.key, { model: TEST_MODEL, messages: [{ role: 'user', content: `${prompt} [mock:status=400]` }] });
    const denied = await chat(app, `${t.key}x`, { model: TEST_MODEL, messages: [{ role: 'user', content: prompt }] });
    expect([ok.status, failed.status, denied.status]).toEqual([200, 502, 401]);
    const db = testDb();
    await settled(db, t.tenantId);
    await db.destroy();
    await new Promise((r) => setTimeout(r, 200));

    const text = lines.join('');
    expect(text).not.toContain(t.key);
    expect(text).not.toContain('XYZZY-4242');
    const requestId = ok.headers.get('x-request-id')!;
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records).toContainEqual(expect.objectContaining({ msg: 'admission', requestId, tenantId: t.tenantId, workflowId: `billed-request:${requestId}` }));
    expect(records).toContainEqual(expect.objectContaining({ msg: 'settlement', requestId, tenantId: t.tenantId, status: 'committed' }));
  });
});
