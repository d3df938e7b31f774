/**
 * Supervision of the embedded stack (issue 14 item 1, M12): a child killed with SIGKILL
 * (PostgreSQL, Redis, the Temporal dev server with its SQLite file) comes back on its own
 * and the application serves again through it, without a restart of the roles; a binary
 * that always crashes ends in a clear crash-loop stop, and `npm start` exits non-zero.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { startStack, type EmbeddedServiceName, type RunningStack } from '../../src/embedded';
import { canConnect, freePort, spawnService, waitUntilReady } from '../../src/embedded/child';
import { CrashLoopError, superviseService, type StartedService } from '../../src/embedded/supervisor';
import { startRoles, type RunningRoles } from '../../src/roles';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { ADMIN_TOKEN, TEST_MODEL, TEST_PRICE } from '../helpers/app';
import { temporalAddress, testConfig, uniqueId } from '../helpers/services';
import { launch, tempDataDir, waitForOutput } from '../helpers/launch';

const FAST_RESTARTS = { initialBackoffMs: 100, maxBackoffMs: 1_000, maxRestarts: 3, windowMs: 60_000 };

async function eventually<T>(what: string, attempt: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms: ${String(last)}`);
}

/** A fake `redis-server` on PATH: the real one, killed 1.5 s after each start (it always crashes). */
function alwaysCrashingRedis(dir: string): string {
  const real = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'redis-server'), `#!/bin/sh\n"${real}" "$@" &\npid=$!\nsleep 1.5\nkill -9 $pid\necho "fake redis-server: crashed on purpose" >&2\nexit 3\n`, { mode: 0o755 });
  return bin;
}

describe('embedded stack supervision', () => {
  describe('a killed child comes back and serves', () => {
    let dataDir = '';
    let stack: RunningStack;
    let roles: RunningRoles;
    let mock: MockUpstream;
    let key: string;
    const fatal: CrashLoopError[] = [];

    beforeAll(async () => {
      dataDir = tempDataDir('billing-supervised-');
      const ports = { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() };
      const config = loadConfig({ PATH: process.env.PATH, API_PORT: String(await freePort()), LOG_LEVEL: 'silent' });
      // Durable mode, as npm start runs it: Redis AOF, Temporal's SQLite file, PostgreSQL with fsync.
      stack = await startStack(config, { dataDir, ports, supervision: FAST_RESTARTS, onFatal: (err) => fatal.push(err) }, createLogger('silent', 'supervised'));
      mock = await startMockUpstream({ port: 0 });
      const roleConfig = loadConfig({ ...process.env, ADMIN_TOKEN, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', MAINTENANCE_SCHEDULES: 'false' });
      roles = await startRoles(roleConfig, stack, { api: true, worker: true, upstreamBaseUrl: mock.url, apiPort: 0, taskQueue: uniqueId('supervised'), pollIntervalMs: 100 }, createLogger('silent', 'roles'));
      const admin = (method: string, p: string, body: unknown): Promise<Response> =>
        fetch(`${roles.apiUrl}${p}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect((await admin('PUT', `/admin/models/${TEST_MODEL}`, TEST_PRICE)).status).toBe(200);
      expect((await admin('POST', '/admin/tenants', { id: 'sup', name: 'sup', quota_limit_micros: 100_000_000 })).status).toBe(201);
      key = ((await (await admin('POST', '/admin/tenants/sup/api-keys', { name: 'k' })).json()) as { key: string }).key;
    }, 180_000);

    afterAll(async () => {
      await roles?.stop();
      await mock?.close();
      await stack?.stop();
      if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
    }, 60_000);

    const billedChat = async (): Promise<number | undefined> => {
      const res = await fetch(`${roles.apiUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: TEST_MODEL, messages: [{ role: 'user', content: 'hello' }] }),
      });
      await res.text();
      return res.status === 200 ? res.status : undefined;
    };

    it.each<EmbeddedServiceName>(['redis', 'postgres', 'temporal'])('SIGKILL of %s: restarted, and a billed request succeeds again', async (name) => {
      expect(await billedChat()).toBe(200);
      const service = stack.services[name]!;
      const before = service.current().child.pid!;
      const crashes = service.crashes();
      process.kill(before, 'SIGKILL');
      await eventually(`${name} restart`, () => Promise.resolve(service.current().child.pid !== before ? true : undefined), 60_000);
      await service.whenRunning();
      expect(service.crashes()).toBe(crashes + 1);
      expect(service.current().child.exitCode).toBeNull();
      // The roles were never restarted: their clients reconnect to the same address.
      expect(await eventually(`a billed request after ${name} came back`, billedChat, 60_000)).toBe(200);
      expect(fatal).toEqual([]);
    }, 150_000);

    it('the restarted Temporal dev server keeps its state (SQLite file): a workflow from before is still there', async () => {
      const connection = await Connection.connect({ address: stack.temporalAddress });
      try {
        const listed = await connection.workflowService.listWorkflowExecutions({ namespace: 'default', query: `WorkflowType = 'billedRequest'` });
        // The billed requests of the tests above ran before the Temporal restart.
        expect(listed.executions.length).toBeGreaterThanOrEqual(4);
      } finally {
        await connection.close();
      }
    });
  });

  it('a Ctrl-C that reaches the whole process group stops npm start without restarting anything', async () => {
    const dir = tempDataDir('billing-supervised-');
    try {
      const redisPort = await freePort();
      const launched = launch('src/main.ts', {
        DATA_DIR: dir,
        // Only Redis is embedded: PostgreSQL and Temporal are the test stack's.
        DATABASE_URL: testConfig().DATABASE_URL!, TEMPORAL_ADDRESS: temporalAddress(), TEMPORAL_TASK_QUEUE: uniqueId('ctrl-c'),
        EMBEDDED_REDIS_PORT: String(redisPort), API_PORT: String(await freePort()), MOCK_UPSTREAM_PORT: String(await freePort()), MAINTENANCE_SCHEDULES: 'false',
      }, { detached: true }); // its own process group, as a terminal's foreground job
      const child = launched.child;
      await waitForOutput(launched, /Durable billing is ready/, 90_000);
      process.kill(-child.pid!, 'SIGINT'); // what Ctrl-C does: every process of the group, redis-server too
      expect(await launched.exited).toBe(0);
      expect(launched.output()).not.toContain('restarting embedded');
      expect(launched.output()).not.toContain('exited unexpectedly');
      expect(await canConnect(redisPort)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  describe('a binary that always crashes', () => {
    it('gives up with a CrashLoopError after the allowed restarts, leaving nothing running', async () => {
      const dir = tempDataDir('billing-supervised-');
      try {
        const port = await freePort();
        const fatal: CrashLoopError[] = [];
        const fake = path.join(alwaysCrashingRedis(dir), 'redis-server');
        // What src/embedded/redis.ts does, with the crashing binary (jest's process.env is not the one spawn reads).
        const start = async (): Promise<StartedService> => {
          const proc = spawnService('redis', fake, ['--port', String(port), '--save', '', '--appendonly', 'no']);
          await waitUntilReady(proc, () => canConnect(port), 15_000);
          return { process: proc, stop: () => proc.stop('SIGTERM') };
        };
        const service = superviseService('redis', await start(), start, { policy: { ...FAST_RESTARTS, maxRestarts: 2 }, log: createLogger('silent', 'crashing'), onCrashLoop: (err) => fatal.push(err) });
        await eventually("the crash-loop stop", () => Promise.resolve(fatal.length > 0 ? true : undefined), 60_000);
        expect(fatal).toHaveLength(1);
        expect(fatal[0]).toBeInstanceOf(CrashLoopError);
        expect(fatal[0]!.service).toBe('redis');
        expect(fatal[0]!.exits).toEqual(['code 3', 'code 3', 'code 3']);
        expect(fatal[0]!.message).toMatch(/embedded redis is in a crash loop \(3 unexpected exits[\s\S]*crashed on purpose/);
        expect(service.crashes()).toBe(3);
        await new Promise((r) => setTimeout(r, 1_500)); // no restart follows the give-up
        expect(service.crashes()).toBe(3);
        expect(await canConnect(port)).toBe(false);
        await service.stop();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }, 90_000);

    it('npm start reports the crash loop and exits 1', async () => {
      const dir = tempDataDir('billing-supervised-');
      try {
        const redisPort = await freePort();
        const launched = launch('src/main.ts', {
          PATH: `${alwaysCrashingRedis(dir)}:${process.env.PATH ?? ''}`,
          DATA_DIR: dir,
          DATABASE_URL: testConfig().DATABASE_URL!,
          TEMPORAL_ADDRESS: temporalAddress(),
          TEMPORAL_TASK_QUEUE: uniqueId('crash-loop'),
          EMBEDDED_REDIS_PORT: String(redisPort),
          API_PORT: String(await freePort()),
          MOCK_UPSTREAM_PORT: String(await freePort()),
          MAINTENANCE_SCHEDULES: 'false',
          EMBEDDED_CRASH_LOOP_RESTARTS: '1',
        });
        const code = await launched.exited;
        const out = launched.output();
        expect(code).toBe(1);
        expect(out).toContain('embedded redis is in a crash loop (2 unexpected exits: code 3, code 3)');
        expect(out).toContain('restarting embedded redis');
        expect(await canConnect(redisPort)).toBe(false);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }, 90_000);
  });
});
