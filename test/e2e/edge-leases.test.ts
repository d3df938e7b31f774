/**
 * In-flight leases outlive no process (M12): an API process SIGKILLed while it holds a
 * key's only parallel-request slot frees it once the lease expires
 * (PARALLEL_LEASE_SECONDS), while a live process renews the leases it holds.
 */
import { chat, startTestApp, TEST_MODEL, type TestApp } from '../helpers/app';
import { startRole, type RoleProcess } from '../helpers/role-process';
import { uniqueId } from '../helpers/services';

// Long enough that a loaded machine still sends the "too early" request inside the lease after the kill.
const LEASE_SECONDS = 5;
const ask = (text: string) => ({ model: TEST_MODEL, messages: [{ role: 'user', content: text }] });

describe('in-flight leases of a killed API process', () => {
  const taskQueue = uniqueId('leases');
  let app: TestApp;
  let api: RoleProcess | undefined;
  beforeAll(async () => {
    app = await startTestApp({ taskQueue, env: { PARALLEL_LEASE_SECONDS: String(LEASE_SECONDS) } });
  }, 60_000);
  afterAll(async () => {
    await api?.kill();
    await app?.stop();
  });

  it('expire after PARALLEL_LEASE_SECONDS, and a live holder keeps its slot past it by renewing', async () => {
    const t = await app.tenant();
    expect((await app.admin('PATCH', `/admin/api-keys/${t.apiKeyId}`, { max_parallel_requests: 1 })).status).toBe(200);

    // A live holder: a request slower than the lease keeps its slot the whole time.
    const held = chat(app, t.key, ask('slow [mock:latency=200] [mock:tokens=40]')); // 8 s, past the lease and the wait below
    await new Promise((r) => setTimeout(r, LEASE_SECONDS * 1000 + 1000));
    expect((await chat(app, t.key, ask('quick'))).status).toBe(429);
    expect((await held).status).toBe(200);

    // A holder that dies: another API process takes the slot and is SIGKILLed mid-request.
    api = await startRole('api', { taskQueue, env: { PARALLEL_LEASE_SECONDS: String(LEASE_SECONDS), UPSTREAM_BASE_URL: app.mock.url } });
    const apiUrl = api.metricsUrl.replace(/\/metrics$/, '');
    const orphan = await fetch(`${apiUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...ask('slow [mock:latency=200] [mock:tokens=40]'), stream: true }),
    });
    expect(orphan.status).toBe(200);
    // The first chunk arrived: the request is in flight and its lease is held by that process.
    const reader = orphan.body!.getReader();
    await reader.read();
    await api.kill();
    const killedAt = Date.now();
    await reader.read().catch(() => undefined);

    expect((await chat(app, t.key, ask('too early'))).status).toBe(429);
    let status = 429;
    while (status === 429 && Date.now() - killedAt < LEASE_SECONDS * 1000 + 5_000) {
      await new Promise((r) => setTimeout(r, 200));
      status = (await chat(app, t.key, ask('after the lease'))).status;
    }
    expect(status).toBe(200);
    // The lease was renewed at most a third of its life before the kill, so it lasts at least two thirds of it after.
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual((LEASE_SECONDS * 1000 * 2) / 3 - 500);
  }, 60_000);
});
