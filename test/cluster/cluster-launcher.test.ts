/**
 * `npm run cluster` itself (issue 13 item 1): from an empty data directory it starts the whole
 * production topology, prints every URL, serves billed requests through both APIs, keeps each
 * API's and worker's log, and on SIGTERM stops every process it started. Ports from a
 * CLUSTER_BASE_PORT of the test's own, checked free first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { canConnect } from '../../src/embedded/child';
import { TEST_MODEL } from '../helpers/app';
import { launch, tempDataDir, waitForOutput } from '../helpers/launch';

const BASE = 7500;
const ADMIN = 'cluster-launcher-admin-token-0123456789';
/** Every fixed port of the plan (src/cluster/stack.ts CLUSTER_PORT_OFFSETS): balancer, APIs, metrics, mock, PostgreSQL, 6 Redis nodes, 2 x 10 Temporal. */
const PORTS = [0, 1, 2, 3, 4, 5, 6, ...Array.from({ length: 6 }, (_, i) => 10 + i), ...Array.from({ length: 20 }, (_, i) => 20 + i)].map((o) => BASE + o);

const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('npm run cluster (issue 13 item 1)', () => {
  it('starts everything, prints every URL, bills through both APIs, keeps their logs and stops it all on SIGTERM', async () => {
    for (const port of PORTS) expect([port, await canConnect(port)]).toEqual([port, false]);
    const dataDir = tempDataDir('cluster-launcher-');
    const launched = launch('src/cluster/main.ts', { DATA_DIR: dataDir, CLUSTER_BASE_PORT: String(BASE), ADMIN_TOKEN: ADMIN, MAINTENANCE_SCHEDULES: 'false' });
    const { child, exited } = launched;
    try {
      await waitForOutput(launched, /Durable billing cluster is ready/, 150_000);
      const out = launched.output();
      const banner = out.slice(out.indexOf('Durable billing cluster is ready'));
      for (const line of [`API 1               http://127.0.0.1:${BASE + 1}`, `API 2               http://127.0.0.1:${BASE + 2}`, `Temporal (balanced) 127.0.0.1:${BASE}`,
        `Temporal server 1   frontend 127.0.0.1:${BASE + 20}`, `Temporal server 2   frontend 127.0.0.1:${BASE + 30}`, 'Temporal shards     16',
        `Redis Cluster       redis-cluster://127.0.0.1:${BASE + 10}`, `PostgreSQL          postgres://postgres@127.0.0.1:${BASE + 6}/billing`,
        `upstream            http://127.0.0.1:${BASE + 5}/v1`, `worker 1 metrics    http://127.0.0.1:${BASE + 3}/metrics`, `worker 2 metrics    http://127.0.0.1:${BASE + 4}/metrics`]) {
        expect(banner).toContain(line);
      }
      const pids = [...banner.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
      expect(pids).toHaveLength(6); // 2 APIs, 2 Temporal servers, 2 workers

      // A tenant through API 1, a billed request through each API.
      const api = (i: number): string => `http://127.0.0.1:${BASE + i}`;
      const admin = (method: string, p: string, body: unknown): Promise<Response> => fetch(`${api(1)}${p}`, { method, headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect((await admin('PUT', `/admin/models/${TEST_MODEL}`, { input_price_micros_per_mtok: 1_000_000, output_price_micros_per_mtok: 2_000_000, max_output_tokens: 64 })).status).toBe(200);
      expect((await admin('POST', '/admin/tenants', { id: 'launcher', name: 'launcher', quota_limit_micros: 1_000_000 })).status).toBe(201);
      const { key } = (await (await admin('POST', '/admin/tenants/launcher/api-keys', { name: 'k' })).json()) as { key: string };
      for (const i of [1, 2]) {
        const res = await fetch(`${api(i)}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: TEST_MODEL, messages: [{ role: 'user', content: 'hello [mock:tokens=5]' }] }) });
        expect([i, res.status]).toEqual([i, 200]);
        expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(5);
      }
      for (const name of ['api-1', 'api-2', 'worker-1', 'worker-2']) {
        expect(fs.readFileSync(path.join(dataDir, 'cluster/logs', `${name}.log`), 'utf8')).toContain('Durable billing is ready');
      }

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      for (const pid of pids) expect([pid, pidAlive(pid)]).toEqual([pid, false]);
      for (const port of PORTS) expect([port, await canConnect(port)]).toEqual([port, false]);
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});
