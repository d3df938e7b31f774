/**
 * `npm start`'s embedded stack (issue 2, item 3): it starts every service on its
 * own, stops every child on SIGINT, keeps data across a restart, names a port in
 * use, and starts nothing for services given by URL.
 */
import fs from 'node:fs';
import net from 'node:net';
import { Client } from 'pg';
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { startStack } from '../../src/embedded';
import { canConnect, freePort } from '../../src/embedded/child';
import { startEmbeddedRedis } from '../../src/embedded/redis';
import { launch, tempDataDir, waitForOutput } from '../helpers/launch';

describe('embedded stack (npm start)', () => {
  it('starts everything, stops every child on SIGINT, and keeps data across a restart', async () => {
    const dataDir = tempDataDir('billing-stack-');
    const ports = { temporal: await freePort(), ui: await freePort(), redis: await freePort(), pg: await freePort(), api: await freePort() };
    const env = {
      DATA_DIR: dataDir,
      EMBEDDED_TEMPORAL_PORT: String(ports.temporal),
      EMBEDDED_TEMPORAL_UI_PORT: String(ports.ui),
      EMBEDDED_REDIS_PORT: String(ports.redis),
      EMBEDDED_POSTGRES_PORT: String(ports.pg),
      API_PORT: String(ports.api),
      MOCK_UPSTREAM_PORT: String(await freePort()),
    };
    const dbUrl = `postgres://postgres@127.0.0.1:${ports.pg}/billing`;
    try {
      const first = launch('src/main.ts', env);
      await waitForOutput(first, /Durable billing is ready/, 90_000);
      const ready = await fetch(`http://127.0.0.1:${ports.api}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready', checks: { redis: 'ok', postgres: 'ok', temporal: 'ok' } });
      expect((await fetch(`http://127.0.0.1:${ports.ui}/`)).status).toBe(200);

      const pg = new Client({ connectionString: dbUrl });
      await pg.connect();
      await pg.query(`INSERT INTO tenant_quota (tenant_id, name, quota_limit_micros) VALUES ('kept', 'Kept', 42000000)`);
      await pg.end();

      first.child.kill('SIGINT');
      expect(await first.exited).toBe(0);
      for (const port of [ports.temporal, ports.ui, ports.redis, ports.pg, ports.api]) {
        expect([port, await canConnect(port)]).toEqual([port, false]);
      }

      const second = launch('src/main.ts', env);
      await waitForOutput(second, /Durable billing is ready/, 90_000);
      const pg2 = new Client({ connectionString: dbUrl });
      await pg2.connect();
      const { rows } = await pg2.query<{ quota_limit_micros: string }>(`SELECT quota_limit_micros FROM tenant_quota WHERE tenant_id = 'kept'`);
      await pg2.end();
      expect(rows).toEqual([{ quota_limit_micros: '42000000' }]);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      expect(await canConnect(ports.pg)).toBe(false);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 240_000);

  it('fails with a message naming a port that is in use, leaving nothing running', async () => {
    const busy = net.createServer();
    const port = await freePort();
    await new Promise<void>((resolve) => busy.listen(port, '127.0.0.1', resolve));
    const dataDir = tempDataDir('billing-stack-');
    try {
      await expect(startEmbeddedRedis({ port, dir: dataDir })).rejects.toThrow(`port ${port} (Redis) is already in use`);
      const launched = launch('src/main.ts', { DATA_DIR: dataDir, EMBEDDED_REDIS_PORT: String(port), EMBEDDED_POSTGRES_PORT: String(await freePort()) });
      expect(await launched.exited).toBe(1);
      expect(launched.output()).toContain(`port ${port} (Redis) is already in use`);
    } finally {
      busy.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('starts nothing for services given by URL', async () => {
    const given = { TEMPORAL_ADDRESS: '127.0.0.1:1', REDIS_URL: 'redis://127.0.0.1:2', DATABASE_URL: 'postgres://x@127.0.0.1:3/db' };
    const stack = await startStack(loadConfig(given), { dataDir: '/nonexistent', ports: { temporal: 1, temporalUi: 1, redis: 1, postgres: 1 } }, createLogger('silent', 't'));
    expect({ t: stack.temporalAddress, r: stack.redisUrl, d: stack.databaseUrl }).toEqual({ t: given.TEMPORAL_ADDRESS, r: given.REDIS_URL, d: given.DATABASE_URL });
    expect(fs.existsSync('/nonexistent')).toBe(false);
    await stack.stop();
  });

  it('rejects a bad environment with a readable list of problems', () => {
    expect(() => loadConfig({ API_PORT: '99999', ADMIN_TOKEN: 'short' })).toThrow(/API_PORT[\s\S]*ADMIN_TOKEN must be at least 16 characters/);
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/ADMIN_TOKEN must be set \(not the development default\)/);
    // Production also needs real payload codec keys (test/config.test.ts covers them).
    const PAYLOAD_CODEC_KEYS = `prod:${Buffer.alloc(32, 7).toString('base64')}`;
    expect(loadConfig({ NODE_ENV: 'production', ADMIN_TOKEN: 'a-real-production-token', PAYLOAD_CODEC_KEYS }).ADMIN_TOKEN).toBe('a-real-production-token');
  });
});
