/**
 * API-key authentication (Isolation invariant): keys resolve through the Redis lookup
 * cache or PostgreSQL, revoked keys fail at once, Redis being down degrades to
 * PostgreSQL (M2.3, M12), and neither keys nor their hashes reach the logs.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { apiKeyAuthOf, bearerCredential, createApiKeyAuthenticator, MissingAuthError } from '../../src/api/auth';
import { hashApiKey } from '../../src/db/api-key-repository';
import { createTenantRepository } from '../../src/db/tenant-repository';
import { errorMiddleware } from '../../src/api/errors';
import { createApiKeyRepository, type ApiKeyRepository } from '../../src/db/api-key-repository';
import type { Redis } from '../../src/redis/client';
import { UNLIMITED } from '../../src/edge/limits';
import { CacheKeys } from '../../src/redis/cache-keys';
import { createKey, createTenant, startAdminHarness, type AdminHarness } from './admin-harness';
import { unreachableRedis } from '../helpers/services';

const INVALID_KEY = { error: { message: 'Invalid API key provided.', type: 'invalid_request_error', code: 'invalid_api_key' } };
const NO_KEY = {
  error: { message: 'You did not provide an API key: use Authorization: Bearer <key>.', type: 'invalid_request_error', code: 'invalid_api_key' },
};

let h: AdminHarness;

beforeAll(async () => {
  h = await startAdminHarness();
});

afterAll(async () => {
  await h.close();
});

/** An app whose authenticator uses the given key lookup, on the real test Redis. */
async function startProbe(apiKeys: Pick<ApiKeyRepository, 'findByHash'>): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  app.get('/probe', createApiKeyAuthenticator({ redis: h.testRedis, logger: { warn: jest.fn() }, apiKeys, tenants: createTenantRepository(h.db) }), (_req, res) => {
    res.json(apiKeyAuthOf(res));
  });
  app.use(errorMiddleware({ warn: jest.fn(), error: jest.fn() }));
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/probe`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function whoami(harness: AdminHarness, authorization?: string) {
  return harness.call('GET', '/v1/whoami', { headers: authorization === undefined ? {} : { authorization } });
}

describe('hashApiKey and bearerCredential', () => {
  it('hashes to lowercase SHA-256 hex (FIPS 180-2 test vector)', () => {
    expect(hashApiKey('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it.each<[string | undefined, string | undefined]>([
    ['Bearer sk-bq-abc', 'sk-bq-abc'],
    ['bearer sk-bq-abc', 'sk-bq-abc'],
    ['Bearer   sk-bq-abc  ', 'sk-bq-abc'],
    ['Bearer', undefined],
    ['Bearer ', undefined],
    ['Bearer a b', undefined],
    ['Basic sk-bq-abc', undefined],
    ['sk-bq-abc', undefined],
    [undefined, undefined],
  ])('%p -> %p', (header, expected) => {
    expect(bearerCredential(header)).toBe(expected);
  });

  it('apiKeyAuthOf refuses a response the authenticator did not see', () => {
    expect(() => apiKeyAuthOf({ locals: {} } as express.Response)).toThrow(MissingAuthError);
  });
});

describe('createApiKeyAuthenticator', () => {
  it('authenticates an active key and caches {id, tenant_id, status} for 60 s', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);

    const res = await whoami(h, `Bearer ${key}`);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ apiKeyId: id, tenantId, limits: { tenant: UNLIMITED, key: UNLIMITED } });
    const lookupKey = CacheKeys.apiKeyLookup(hashApiKey(key));
    expect(JSON.parse((await h.testRedis.get(lookupKey))!)).toEqual({ id, tenant_id: tenantId, status: 'active', limits: { tenant: UNLIMITED, key: UNLIMITED } });
    const ttl = await h.testRedis.ttl(lookupKey);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it.each<[string, string | undefined, object]>([
    ['no Authorization header', undefined, NO_KEY],
    ['an empty bearer', 'Bearer ', NO_KEY],
    ['another scheme', 'Basic abc', NO_KEY],
    ['an unknown key', 'Bearer sk-bq-this-key-was-never-issued', INVALID_KEY],
  ])('%s -> 401 invalid_api_key', async (_label, authorization, body) => {
    const res = await whoami(h, authorization);

    expect(res.status).toBe(401);
    expect(res.body).toEqual(body);
  });

  it('a revoked key fails immediately, even right after a successful cached lookup', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    expect((await whoami(h, `Bearer ${key}`)).status).toBe(200);
    expect(await h.testRedis.exists(CacheKeys.apiKeyLookup(hashApiKey(key)))).toBe(1);

    expect((await h.admin('DELETE', `/admin/api-keys/${id}`)).status).toBe(200);
    const res = await whoami(h, `Bearer ${key}`);

    expect(res.status).toBe(401);
    expect(res.body).toEqual(INVALID_KEY);
  });

  it('a revoked key is refused from PostgreSQL when nothing is cached', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    await h.admin('DELETE', `/admin/api-keys/${id}`);
    await h.testRedis.del(CacheKeys.apiKeyLookup(hashApiKey(key)));

    expect((await whoami(h, `Bearer ${key}`)).status).toBe(401);
  });

  it('a read from before a revocation cannot overwrite the revocation entry (SET NX)', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    const lookupKey = CacheKeys.apiKeyLookup(hashApiKey(key));
    const repo = createApiKeyRepository(h.db);
    // The race: PostgreSQL answers "active", then the revocation commits and writes its
    // entry, and only then does this reader try to cache what it read.
    const findByHash = jest.fn(async (hash: string) => {
      const found = await repo.findByHash(hash);
      await h.admin('DELETE', `/admin/api-keys/${id}`);
      return found;
    });
    const probe = await startProbe({ findByHash });
    try {
      const racing = await fetch(probe.url, { headers: { authorization: `Bearer ${key}` } });
      const after = await fetch(probe.url, { headers: { authorization: `Bearer ${key}` } });

      expect(racing.status).toBe(200);
      expect(JSON.parse((await h.testRedis.get(lookupKey))!)).toEqual({ id, tenant_id: tenantId, status: 'revoked', limits: { tenant: UNLIMITED, key: UNLIMITED } });
      expect(after.status).toBe(401);
      expect(findByHash).toHaveBeenCalledTimes(1);
    } finally {
      await probe.close();
    }
  });

  it('an unreadable cache entry is ignored and PostgreSQL decides', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    await h.testRedis.set(CacheKeys.apiKeyLookup(hashApiKey(key)), '{"id": 5', 'EX', 60);

    const res = await whoami(h, `Bearer ${key}`);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ apiKeyId: id, tenantId, limits: { tenant: UNLIMITED, key: UNLIMITED } });
  });

  it('answers the second request from the cache, without PostgreSQL', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);
    const repo = createApiKeyRepository(h.db);
    const findByHash = jest.fn(repo.findByHash);
    const probe = await startProbe({ findByHash });
    try {
      const first = await fetch(probe.url, { headers: { authorization: `Bearer ${key}` } });
      const second = await fetch(probe.url, { headers: { authorization: `Bearer ${key}` } });

      expect(await first.json()).toEqual({ apiKeyId: id, tenantId, limits: { tenant: UNLIMITED, key: UNLIMITED } });
      expect(await second.json()).toEqual({ apiKeyId: id, tenantId, limits: { tenant: UNLIMITED, key: UNLIMITED } });
      expect(findByHash).toHaveBeenCalledTimes(1);
      expect(findByHash).toHaveBeenCalledWith(hashApiKey(key));
    } finally {
      await probe.close();
    }
  });

  it('never logs the key nor its hash', async () => {
    const tenantId = await createTenant(h, 1);
    const { key } = await createKey(h, tenantId);
    await whoami(h, `Bearer ${key}`);
    await whoami(h, `Bearer ${key}x`);
    await h.testRedis.set(CacheKeys.apiKeyLookup(hashApiKey(key)), 'garbage', 'EX', 60);
    await whoami(h, `Bearer ${key}`);

    const logs = h.logLines.join('\n');
    expect(logs).toContain('unreadable API key lookup cache entry');
    expect(logs).not.toContain(key);
    expect(logs).not.toContain(hashApiKey(key));
  });
});

describe('M2.3 while Redis is unreachable', () => {
  let deadRedis: Redis;
  let degraded: AdminHarness;

  beforeAll(async () => {
    deadRedis = unreachableRedis();
    degraded = await startAdminHarness({ appRedis: deadRedis });
  });

  afterAll(async () => {
    await degraded.close();
    deadRedis.disconnect();
  });

  it('authenticates from PostgreSQL and still refuses revoked and unknown keys', async () => {
    const tenantId = await createTenant(h, 1);
    const active = await createKey(h, tenantId);
    const revoked = await createKey(h, tenantId);
    await h.admin('DELETE', `/admin/api-keys/${revoked.id}`);

    const ok = await whoami(degraded, `Bearer ${active.key}`);
    const refused = await whoami(degraded, `Bearer ${revoked.key}`);
    const unknown = await whoami(degraded, 'Bearer sk-bq-unknown');

    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ apiKeyId: active.id, tenantId, limits: { tenant: UNLIMITED, key: UNLIMITED } });
    expect(refused.status).toBe(401);
    expect(unknown.status).toBe(401);
    const logs = degraded.logLines.join('\n');
    expect(logs).toContain('API key cache unavailable; reading PostgreSQL');
    expect(logs).not.toContain(active.key);
  });

  it('revoking answers 503 (retry) but the key is revoked in PostgreSQL, and auth refuses it', async () => {
    const tenantId = await createTenant(h, 1);
    const { id, key } = await createKey(h, tenantId);

    const res = await degraded.admin('DELETE', `/admin/api-keys/${id}`);

    expect(res.status).toBe(503);
    expect(res.body.error).toMatchObject({ type: 'server_error', code: 'service_unavailable' });
    expect((await h.db('api_key_quota').where({ id }).first()).status).toBe('revoked');
    expect((await whoami(degraded, `Bearer ${key}`)).status).toBe(401);
  });
});
