/**
 * A tiny Express app with the admin routes, /v1/models and a probe behind the API-key
 * authenticator, on port 0 over the real Redis and PostgreSQL of the test stack.
 * Every log line is captured (at trace level) so tests can prove secrets never reach logs.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Writable } from 'node:stream';
import express from 'express';
import pino from 'pino';
import { apiKeyAuthOf, createApiKeyAuthenticator } from '../../src/api/auth';
import { errorMiddleware } from '../../src/api/errors';
import { adminRouter } from '../../src/api/routes/admin';
import { modelsRouter } from '../../src/api/routes/models';
import type { Knex } from '../../src/db/knex';
import { developmentKeyring } from '../../src/codec/keyring';
import { createRepositories } from '../../src/db/repositories';
import type { Redis } from '../../src/redis/client';
import { createQuotaScripts } from '../../src/redis/scripts';
import { createAccountServices } from '../../src/services';
import { Registry } from 'prom-client';
import { testDb, testRedis, uniqueId } from '../helpers/services';
import type { Config } from '../../src/config';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

/** The limit, alert and budget window fields of a tenant or key view that sets none (no limits, no webhook, the default thresholds, no window). */
export const NO_LIMITS = {
  rpm_limit: null,
  tpm_limit: null,
  max_parallel_requests: null,
  alert_webhook_url: null,
  alert_thresholds_percent: [80, 100],
  budget_period: 'none',
  budget_timezone: 'UTC',
  budget_windows: [],
} as const;

export interface JsonResponse {
  status: number;
  headers: Headers;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- tests read arbitrary JSON
}

export interface AdminHarness {
  baseUrl: string;
  db: Knex;
  /** The Redis client the app uses (unless the harness was given another one). */
  redis: Redis;
  /** A client on the real test Redis, for assertions. */
  testRedis: Redis;
  /** Every log line the app wrote, as text. */
  logLines: string[];
  /** Calls the app with the admin token (unless headers override Authorization). */
  admin(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<JsonResponse>;
  /** Calls the app with the given headers and a raw string body. */
  call(method: string, path: string, options?: { headers?: Record<string, string>; rawBody?: string }): Promise<JsonResponse>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** The Redis the app uses, e.g. an unreachable one; the harness does not close it. */
  appRedis?: Redis;
  /** The database the app uses, e.g. a fresh one; the harness does not close it. @default testDb() */
  db?: Knex;
  /** The settings the admin routes read (the usage export's environment destinations). */
  config?: Readonly<Config>;
}

async function toJsonResponse(res: Response): Promise<JsonResponse> {
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    // non-JSON answers (e.g. Express' own 404 page) stay text
  }
  return { status: res.status, headers: res.headers, body };
}

export async function startAdminHarness(options: HarnessOptions = {}): Promise<AdminHarness> {
  const db = options.db ?? testDb();
  const realRedis = await testRedis();
  const redis = options.appRedis ?? realRedis;
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(chunk.toString('utf8'));
      callback();
    },
  });
  const logger = pino({ level: 'trace' }, sink);

  const repositories = createRepositories(db, { bodyKeys: developmentKeyring() });
  const scripts = createQuotaScripts(redis, { ttlSeconds: 3600, registry: new Registry() });
  const { tenants, apiKeys, usage, budgetWindows } = createAccountServices({ db, redis, repositories, scripts, log: logger });
  const authenticate = createApiKeyAuthenticator({ apiKeys: repositories.apiKeys, tenants: repositories.tenants, redis, logger });
  const app = express();
  app.use(express.json({ limit: '1mb' }));
  app.use(adminRouter({ tenants, apiKeys, usage, budgetWindows, prices: repositories.modelPrices, repositories, logger, adminToken: ADMIN_TOKEN, config: options.config }));
  app.use(modelsRouter({ modelPrices: repositories.modelPrices, authenticate }));
  app.get('/v1/whoami', authenticate, (_req, res) => {
    res.json(apiKeyAuthOf(res));
  });
  app.use(errorMiddleware(logger));

  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const call: AdminHarness['call'] = async (method, path, opts = {}) => {
    const init: RequestInit = { method, headers: opts.headers ?? {} };
    if (opts.rawBody !== undefined) init.body = opts.rawBody;
    return toJsonResponse(await fetch(`${baseUrl}${path}`, init));
  };

  return {
    baseUrl,
    db,
    redis,
    testRedis: realRedis,
    logLines,
    admin: (method, path, body, headers = {}) =>
      call(method, path, {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        rawBody: body === undefined ? undefined : JSON.stringify(body),
      }),
    call,
    async close() {
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
      realRedis.disconnect();
      if (options.db === undefined) await db.destroy();
    },
  };
}


/** Creates a tenant through the admin API and returns its id. */
export async function createTenant(h: AdminHarness, quotaLimitMicros: number, name = 'Acme Corp'): Promise<string> {
  const id = uniqueId('tenant');
  const res = await h.admin('POST', '/admin/tenants', { id, name, quota_limit_micros: quotaLimitMicros });
  if (res.status !== 201) throw new Error(`tenant creation failed: ${res.status} ${JSON.stringify(res.body)}`);
  return id;
}

/** Issues an API key through the admin API. */
export async function createKey(
  h: AdminHarness,
  tenantId: string,
  budgetMicros?: number | null,
): Promise<{ id: string; key: string }> {
  const body = budgetMicros === undefined ? { name: 'ci key' } : { name: 'ci key', budget_micros: budgetMicros };
  const res = await h.admin('POST', `/admin/tenants/${tenantId}/api-keys`, body);
  if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${JSON.stringify(res.body)}`);
  return { id: res.body.id as string, key: res.body.key as string };
}

/** The body errorMiddleware renders for a 401 on an admin route. */
export const ADMIN_UNAUTHORIZED = {
  error: {
    message: 'This endpoint requires the admin token: Authorization: Bearer <ADMIN_TOKEN>.',
    type: 'invalid_request_error',
    code: 'invalid_api_key',
  },
};
