/**
 * A running billing system for end-to-end tests: the mock upstream over real
 * HTTP, the worker and the API on the real services global setup started, on a
 * task queue of its own. Plus admin helpers that go through the HTTP contract.
 */
import { loadConfig } from '../../src/config';
import { createLogger } from '../../src/log';
import { startRoles, type RunningRoles } from '../../src/roles';
import { startMockUpstream, type MockUpstream } from '../../src/upstream/mock/server';
import { temporalAddress, testConfig, uniqueId } from './services';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestApp {
  url: string;
  mock: MockUpstream;
  services: RunningRoles;
  admin<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** A tenant (a new id unless given) with a key and the test model priced: 1 unit per Mtok in, 2 per Mtok out. */
  tenant(opts?: { quotaMicros?: number; budgetMicros?: number | null; tenantId?: string }): Promise<{ tenantId: string; apiKeyId: string; key: string }>;
  stop(): Promise<void>;
}

export const TEST_MODEL = 'gpt-4o-mini';
export const TEST_PRICE = { input_price_micros_per_mtok: 1_000_000, output_price_micros_per_mtok: 2_000_000, max_output_tokens: 64 };

export interface TestAppOptions {
  workers?: boolean;
  api?: boolean;
  /** Share a task queue with a worker in another process. */
  taskQueue?: string;
  /** Use another Redis than the global one (outage tests). */
  redisUrl?: string;
  /** Use another Temporal than the global one (the cluster tests' own cluster). */
  temporalAddress?: string;
  /** Collect the JSON log lines here (log-hygiene tests), at info level. */
  logLines?: string[];
  /** Extra settings, as environment variables. */
  env?: Record<string, string>;
}

export async function startTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const env = testConfig();
  const config = loadConfig({ ...process.env, ADMIN_TOKEN, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent', ...opts.env });
  const lines = opts.logLines;
  const log = lines
    ? createLogger('info', 'e2e', { write: (line: string) => void lines.push(line) })
    : createLogger(config.LOG_LEVEL, 'e2e');
  const mock = await startMockUpstream({ port: 0 });
  const services = await startRoles(config, {
    temporalAddress: opts.temporalAddress ?? temporalAddress(),
    redisUrl: opts.redisUrl ?? env.REDIS_URL!,
    databaseUrl: env.DATABASE_URL!,
  }, {
    api: opts.api ?? true,
    worker: opts.workers ?? true,
    upstreamBaseUrl: mock.url,
    apiPort: 0,
    taskQueue: opts.taskQueue ?? uniqueId('billing-e2e'),
    pollIntervalMs: 100,
  }, log);
  const url = services.apiUrl!;
  const admin = async <T,>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  };
  await admin('PUT', `/admin/models/${TEST_MODEL}`, TEST_PRICE);
  return {
    url,
    mock,
    services,
    admin,
    async tenant(o = {}) {
      const tenantId = o.tenantId ?? uniqueId('tenant');
      const t = await admin('POST', '/admin/tenants', { id: tenantId, name: tenantId, quota_limit_micros: o.quotaMicros ?? 10_000_000 });
      if (t.status !== 201) throw new Error(`tenant: ${t.status} ${JSON.stringify(t.body)}`);
      const k = await admin<{ id: string; key: string }>('POST', `/admin/tenants/${tenantId}/api-keys`, { name: 'test', ...(o.budgetMicros !== undefined ? { budget_micros: o.budgetMicros } : {}) });
      if (k.status !== 201) throw new Error(`key: ${k.status} ${JSON.stringify(k.body)}`);
      return { tenantId, apiKeyId: k.body.id, key: k.body.key };
    },
    async stop() {
      await services.stop();
      await mock.close();
    },
  };
}

/** The reply text a client got from `chat`: a JSON completion's choice 0, or the content of an SSE stream's chunks. */
export function replyOf(res: { text: string; headers: Headers }): string {
  if (!(res.headers.get('content-type') ?? '').includes('event-stream')) {
    return (JSON.parse(res.text) as { choices: Array<{ message: { content: string } }> }).choices[0]!.message.content;
  }
  return res.text.split('\n')
    .filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
    .map((l) => JSON.parse(l.slice(6)) as { choices?: Array<{ delta?: { content?: string } }> })
    .map((c) => c.choices?.[0]?.delta?.content ?? '')
    .join('');
}

/** POST /v1/chat/completions with a key; returns status, headers and the raw text. */
export async function chat(app: TestApp, key: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; text: string; json: () => unknown }> {
  const res = await fetch(`${app.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as unknown };
}
