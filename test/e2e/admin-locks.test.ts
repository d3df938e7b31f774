/**
 * Ops on a stuck conversation lock (M7.3) through the real API and the real CLI:
 * `GET /admin/locks/:conversation_id` shows the holder and its expiry, `DELETE` releases
 * it (the holder learns it lost the lock), `npm run locks` does the same from a shell;
 * an unknown lock is 404, a malformed id 400, no admin token 401.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { createLogger } from '../../src/log';
import { createLockMetrics } from '../../src/metrics';
import { createDistributedLock } from '../../src/locks/distributed-lock';
import type { Redis } from '../../src/redis/client';
import { createScriptRunner } from '../../src/redis/script-runner';
import { startTestApp, type TestApp } from '../helpers/app';
import { testConfig, testRedis, uniqueId } from '../helpers/services';

const run = promisify(execFile);

describe('/admin/locks and npm run locks (M7.3)', () => {
  let app: TestApp;
  let redis: Redis;
  let locks: ReturnType<typeof createDistributedLock>;
  beforeAll(async () => {
    app = await startTestApp({ workers: false });
    redis = await testRedis();
    const registry = new Registry();
    locks = createDistributedLock({ redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: createLogger('silent', 'test') }, { ttlMs: 2_000 });
  }, 60_000);
  afterAll(async () => {
    await app?.stop();
    redis?.disconnect();
  });

  /** The CLI as an operator runs it, against the test Redis. */
  async function cli(...args: string[]): Promise<{ code: number; out: string }> {
    const root = testConfig().rootDir;
    try {
      const { stdout } = await run(path.join(root, 'node_modules/.bin/tsx'), ['src/locks/cli.ts', ...args], { cwd: root, env: { PATH: process.env.PATH ?? '', REDIS_URL: testConfig().REDIS_URL } });
      return { code: 0, out: stdout };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, out: e.stdout + e.stderr };
    }
  }

  it('shows a held lock, and an operator\'s DELETE releases it: the holder is told it lost the lock', async () => {
    const conversation = uniqueId('conv');
    const held = await locks.acquire(conversation, { info: 'tenant acme, request req_42' });

    const shown = await app.admin<{ conversation_id: string; fence: number; info: string; acquired_at: string; expires_in_ms: number }>('GET', `/admin/locks/${conversation}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ conversation_id: conversation, fence: held.fence, info: 'tenant acme, request req_42' });
    expect(shown.body.expires_in_ms).toBeGreaterThan(0);
    expect(shown.body.expires_in_ms).toBeLessThanOrEqual(2_000);

    const released = await app.admin('DELETE', `/admin/locks/${conversation}`);
    expect(released).toEqual({ status: 200, body: { conversation_id: conversation, released: true, fence: held.fence } });
    await new Promise<void>((resolve) => (held.lost.aborted ? resolve() : held.lost.addEventListener('abort', () => resolve())));
    expect((await app.admin('GET', `/admin/locks/${conversation}`)).status).toBe(404);
    expect((await app.admin('DELETE', `/admin/locks/${conversation}`)).status).toBe(404);
    expect(await held.release()).toBe(false);
  });

  it('npm run locks shows and releases a lock from a shell', async () => {
    const conversation = uniqueId('conv');
    const held = await locks.acquire(conversation, { info: 'tenant acme' });

    const show = await cli('show', conversation);
    expect(show.code).toBe(0);
    expect(show.out).toMatch(new RegExp(`conversation ${conversation}: locked, fence ${held.fence}, since .*, expires in \\d+ ms, tenant acme`));

    const release = await cli('release', conversation);
    expect(release.code).toBe(0);
    expect(release.out).toContain('released');
    expect(await locks.inspect(conversation)).toBeNull();
    expect((await cli('show', conversation)).out).toContain('not locked');
    expect((await cli('release', conversation)).code).toBe(1);
    expect((await cli('unlock')).code).toBe(2);
    await held.release();
  }, 60_000);

  it('refuses a malformed conversation id (400) and callers without the admin token (401)', async () => {
    const bad = await app.admin<{ error: { type: string } }>('GET', `/admin/locks/${encodeURIComponent('has{brace}')}`);
    expect(bad.status).toBe(400);
    expect(bad.body.error.type).toBe('invalid_request_error');
    expect((await fetch(`${app.url}/admin/locks/anything`)).status).toBe(401);
  });
});
