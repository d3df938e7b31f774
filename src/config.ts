/**
 * The one reader of `process.env`. Parses every setting with zod into a frozen,
 * typed config and exits with a readable list of what is wrong.
 *
 * An unset TEMPORAL_ADDRESS / REDIS_URL / DATABASE_URL means "start the embedded
 * service" (see src/embedded); a set one means "use that service, start nothing".
 */
import path from 'node:path';
import { z } from 'zod';
import { parseKeyring, type CodecKeyring } from './codec/keyring';
import { parseRedisUrl } from './redis/redis-url';

const port = z.coerce.number().int().min(1).max(65535);
const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().min(0);
const optionalUrl = z
  .string()
  .trim()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATA_DIR: z.string().default('.data'),

  API_HOST: z.string().default('127.0.0.1'),
  API_PORT: port.default(8080),
  WORKER_METRICS_PORT: port.default(9464),
  ADMIN_TOKEN: z.string().min(16, 'ADMIN_TOKEN must be at least 16 characters').default('dev-admin-token-change-me'),

  TEMPORAL_ADDRESS: optionalUrl,
  TEMPORAL_NAMESPACE: z.string().default('default'),
  TEMPORAL_TASK_QUEUE: z.string().default('billing'),
  /** One Redis (`redis://`, `rediss://`) or a Redis Cluster (`redis-cluster://host:port,host:port,...`; docs/redis-cluster.md). */
  REDIS_URL: optionalUrl.superRefine((v, ctx) => {
    if (v === undefined) return;
    try {
      parseRedisUrl(v);
    } catch (err) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
    }
  }),
  DATABASE_URL: optionalUrl,

  EMBEDDED_TEMPORAL_PORT: port.default(7233),
  EMBEDDED_TEMPORAL_UI_PORT: port.default(8233),
  /** Task-queue fairness of the embedded Temporal (tenant ids as fairness keys); `false` only to measure what it buys. */
  EMBEDDED_TEMPORAL_FAIRNESS: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  EMBEDDED_REDIS_PORT: port.default(6390),
  EMBEDDED_POSTGRES_PORT: port.default(5433),
  /**
   * `npm run cluster` (docs/cluster.md) takes the ports from here up: the Temporal frontend balancer
   * at +0, the APIs at +1, +2, the workers' metrics at +3, +4, the mock upstream at +5, PostgreSQL at +6,
   * the Redis Cluster at +10..+15, the Temporal server processes at +20..+39 (below 32768: see there).
   */
  CLUSTER_BASE_PORT: port.max(32_727).default(7300),
  /** An embedded child that exits more than this often within the window is a crash loop: the stack stops (src/embedded/supervisor.ts). */
  EMBEDDED_CRASH_LOOP_RESTARTS: nonNegativeInt.default(5),
  EMBEDDED_CRASH_LOOP_WINDOW_SECONDS: positiveInt.default(60),

  /**
   * Keys of the payload codec that encrypts Temporal history: comma-separated `<key id>:<base64 of 32 bytes>`.
   * Unset: the public development key (development and test only; production must set it).
   */
  PAYLOAD_CODEC_KEYS: optionalUrl,
  /** The key id new payloads are encrypted with; the others still decrypt (rotation). Unset: the only key. */
  PAYLOAD_CODEC_KEY_ID: optionalUrl,
  /** Browser origins (the Temporal Web UI) allowed to call /codec; comma-separated. Unset: the embedded Web UI. */
  CODEC_CORS_ORIGINS: optionalUrl,
  /** How long an operator session of the codec server (/codec/login, for the Web UI) lives; at most a day. */
  CODEC_SESSION_TTL_SECONDS: positiveInt.max(24 * 3600).default(3600),

  UPSTREAM_BASE_URL: optionalUrl,
  MOCK_UPSTREAM_PORT: port.default(8090),

  RESERVATION_TTL_SECONDS: positiveInt.default(7 * 24 * 3600),
  /** How long the API waits for the next relayed output before answering 502 and cancelling the call. */
  RELAY_IDLE_TIMEOUT_SECONDS: positiveInt.default(120),
  /** How long a request's relayed output stays replayable for a repeated Idempotency-Key. */
  RELAY_TTL_SECONDS: positiveInt.default(3600),
  /**
   * Durable requests one API process keeps in flight; past it, 503 at once (overload answered, not queued).
   * Size it as throughput x acceptable latency: e.g. 35 billed req/s x 5 s = 175 on this 2-core machine.
   */
  MAX_INFLIGHT_REQUESTS: positiveInt.default(256),
  /**
   * Largest accepted request body in bytes (413 request_too_large above it). Bodies go to the
   * body store (PostgreSQL), never into Temporal history, so inline images fit. @default 32 MiB
   */
  MAX_REQUEST_BODY_BYTES: positiveInt.default(32 * 1024 * 1024),
  /**
   * Prompt tokens reserved for an image whose size the gateway cannot read (an http(s) URL; inline
   * base64 images are measured). Unset: 1445, the most OpenAI's tile rule charges (docs/pricing.md).
   */
  IMAGE_WORST_CASE_TOKENS: z.preprocess((v) => (v === '' ? undefined : v), positiveInt.max(1_000_000).optional()),
  /** How long a request's in-flight lease (max_parallel_requests) lives unless the API renews it; bounds how long a crashed API holds slots. */
  PARALLEL_LEASE_SECONDS: positiveInt.default(30),

  /**
   * The sweeper examines pending reservations older than this and settles those whose workflow no
   * longer runs (docs/sweeper.md). 15 minutes = one UpstreamCallStep attempt's start-to-close: younger
   * requests are not even looked at. Must stay below RELAY_TTL_SECONDS (the relay is the evidence of
   * what was delivered). @default 900
   */
  SWEEP_PENDING_AFTER_SECONDS: positiveInt.default(900),
  /** Most pending reservations one sweeper run examines; older ones left over wait for the next run. @default 1000 */
  SWEEP_MAX_PER_RUN: positiveInt.default(1000),
  /** How long a conversation's stored messages (prompts and replies, encrypted) are kept; the sweeper run deletes older ones. @default 30 */
  CONVERSATION_RETENTION_DAYS: positiveInt.default(30),
  /** Bounded wait of ConversationAppendStep for the conversation lock, in ms. @default 10000 */
  CONVERSATION_LOCK_WAIT_MS: positiveInt.default(10_000),
  /** Periods of the maintenance Schedules (M4.5: a shorter period is a setting), in seconds. */
  QUOTA_SYNC_INTERVAL_SECONDS: positiveInt.default(300),
  APIKEY_SYNC_INTERVAL_SECONDS: positiveInt.default(600),
  CONSISTENCY_CHECK_INTERVAL_SECONDS: positiveInt.default(3600),
  RESERVATION_SWEEP_INTERVAL_SECONDS: positiveInt.default(300),
  OUTBOX_DRAIN_INTERVAL_SECONDS: positiveInt.default(60),
  /** Whether a worker creates/updates the maintenance Schedules at start; `false` for a worker that must not (tests). */
  MAINTENANCE_SCHEDULES: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Consistency check (M4.3): confirmed drift above this (summed per kind, micros) raises the alert; 0 = any drift. */
  CONSISTENCY_DRIFT_THRESHOLD_MICROS: z.coerce.number().int().min(0).default(0),
  /**
   * How long a counter that disagrees with the ledger must stay unmoved (no script touched it, no
   * ledger row of it changed) before its drift is confirmed: longer than a request spends between
   * its Redis and its ledger write.
   */
  CONSISTENCY_CONFIRM_GRACE_MS: positiveInt.default(2000),
  /** Re-reads of a candidate that keeps moving before it is reported busy (unconfirmed) instead. */
  CONSISTENCY_CONFIRM_ROUNDS: positiveInt.default(3),
  /** Rebuild confirmed drifted counters from the ledger; `false` only reports them. */
  CONSISTENCY_HEAL: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Workflow starts the dispatcher sends at once, and outbox rows one drain round reads (M5.3). */
  DISPATCH_BATCH_SIZE: positiveInt.max(1000).default(100),
  /** The outbox drain sends only rows older than this: younger ones are still being sent after their commit. */
  DISPATCH_DRAIN_MIN_AGE_SECONDS: nonNegativeInt.default(5),
  /** Dispatched outbox rows are deleted by the drain after this long (the record of what was sent). */
  DISPATCH_OUTBOX_RETENTION_SECONDS: positiveInt.default(7 * 24 * 3600),
  /** How long a worker caches a tenant's and a key's alert settings (webhook URL, thresholds); 0 = read them at every settlement that needs them. */
  ALERT_SETTINGS_CACHE_SECONDS: nonNegativeInt.default(30),
  /** Timeout of one budget-alert webhook POST. */
  ALERT_WEBHOOK_TIMEOUT_SECONDS: positiveInt.default(10),
  /** First retry delay of a failed webhook delivery; each retry doubles it, up to ALERT_RETRY_MAX_INTERVAL_SECONDS. */
  ALERT_RETRY_INITIAL_SECONDS: positiveInt.default(5),
  ALERT_RETRY_MAX_INTERVAL_SECONDS: positiveInt.default(600),
  /** A webhook delivery still failing after this long is given up and recorded as failed. */
  ALERT_DELIVERY_GIVE_UP_SECONDS: positiveInt.default(24 * 3600),
  /** Usage export (docs/usage-export.md): period of the export run, and of the reconciliation (daily). */
  USAGE_EXPORT_INTERVAL_SECONDS: positiveInt.default(30),
  USAGE_EXPORT_RECONCILE_INTERVAL_SECONDS: positiveInt.default(24 * 3600),
  /** Entries per batch and batches per destination in one run (the rest waits for the next run). */
  USAGE_EXPORT_BATCH_SIZE: positiveInt.max(1000).default(100),
  USAGE_EXPORT_MAX_BATCHES_PER_RUN: positiveInt.default(50),
  /** Timeout of one request to a destination. */
  USAGE_EXPORT_TIMEOUT_SECONDS: positiveInt.default(10),
  /** Backoff of a failing destination: doubles per failed run, from initial up to max. */
  USAGE_EXPORT_RETRY_INITIAL_SECONDS: positiveInt.default(5),
  USAGE_EXPORT_RETRY_MAX_SECONDS: positiveInt.default(600),
  /** Outbox rows every destination acknowledged are deleted this long after their commit (Stripe refuses events older than 35 days). */
  USAGE_EXPORT_RETENTION_DAYS: positiveInt.default(35),
  /** OpenMeter: set the URL to export there. Source is fixed (OpenMeter dedupes on source + id); subject is the tenant or the key. */
  USAGE_EXPORT_OPENMETER_URL: optionalUrl,
  USAGE_EXPORT_OPENMETER_TOKEN: optionalUrl,
  USAGE_EXPORT_OPENMETER_SOURCE: z.string().min(1).default('durable-billing'),
  USAGE_EXPORT_OPENMETER_TYPE: z.string().min(1).default('llm.usage'),
  USAGE_EXPORT_OPENMETER_SUBJECT: z.enum(['tenant', 'api_key']).default('tenant'),
  /** Lago: set the URL to export there; the billable metric code, and which external id the tenant (or key) id fills. */
  USAGE_EXPORT_LAGO_URL: optionalUrl,
  USAGE_EXPORT_LAGO_API_KEY: optionalUrl,
  USAGE_EXPORT_LAGO_METRIC_CODE: z.string().min(1).default('llm_usage'),
  USAGE_EXPORT_LAGO_ID_FIELD: z.enum(['external_subscription_id', 'external_customer_id']).default('external_subscription_id'),
  USAGE_EXPORT_LAGO_ID_FROM: z.enum(['tenant', 'api_key']).default('tenant'),
  /** Stripe meter events: set the API key to export there. The customer of a tenant: USAGE_EXPORT_STRIPE_CUSTOMERS (JSON {tenant: cus_...}), else the tenant id. */
  USAGE_EXPORT_STRIPE_API_KEY: optionalUrl,
  USAGE_EXPORT_STRIPE_URL: z.string().url().default('https://api.stripe.com'),
  USAGE_EXPORT_STRIPE_EVENT_NAME: z.string().min(1).max(100).default('llm_usage'),
  USAGE_EXPORT_STRIPE_VALUE: z.enum(['cost_micros', 'total_tokens']).default('cost_micros'),
  USAGE_EXPORT_STRIPE_CUSTOMERS: z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined || v.trim() === '') return {};
      try {
        const parsed: unknown = JSON.parse(v);
        if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) && Object.values(parsed).every((c) => typeof c === 'string')) return parsed as Record<string, string>;
      } catch {
        // reported below
      }
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be a JSON object of tenant id -> Stripe customer id' });
      return z.NEVER;
    }),
  /** The signed generic webhook: URL and signing secret (both, or neither). */
  USAGE_EXPORT_WEBHOOK_URL: optionalUrl,
  USAGE_EXPORT_WEBHOOK_SECRET: optionalUrl,
});

const DEV_ADMIN_TOKEN = 'dev-admin-token-change-me';

/** The embedded defaults are for a laptop; production must bring its own admin token. */
const checkedEnvSchema = envSchema.refine((env) => env.NODE_ENV !== 'production' || env.ADMIN_TOKEN !== DEV_ADMIN_TOKEN, {
  path: ['ADMIN_TOKEN'],
  message: 'ADMIN_TOKEN must be set (not the development default) when NODE_ENV=production',
})
  // A sweep after the relay expired finds no evidence of delivered output and voids what was delivered.
  .refine((env) => env.SWEEP_PENDING_AFTER_SECONDS < env.RELAY_TTL_SECONDS, {
    path: ['SWEEP_PENDING_AFTER_SECONDS'],
    message: 'must be less than RELAY_TTL_SECONDS (the relay is what a sweep bills delivered output from)',
  })
  // An unsigned usage webhook could be forged by anyone who knows its URL.
  .refine((env) => (env.USAGE_EXPORT_WEBHOOK_URL === undefined) === (env.USAGE_EXPORT_WEBHOOK_SECRET === undefined), {
    path: ['USAGE_EXPORT_WEBHOOK_SECRET'],
    message: 'USAGE_EXPORT_WEBHOOK_URL and USAGE_EXPORT_WEBHOOK_SECRET are set together (the webhook is always signed)',
  });

export type Env = z.infer<typeof envSchema>;

/** The resolved configuration every module receives. */
export interface Config extends Env {
  /** Absolute path of DATA_DIR. */
  dataDir: string;
  /** Absolute path of the project root (where package.json lives). */
  rootDir: string;
  /** The payload codec's keys, from PAYLOAD_CODEC_KEYS / PAYLOAD_CODEC_KEY_ID. */
  payloadCodecKeys: CodecKeyring;
  /** Origins allowed to call the codec server (CODEC_CORS_ORIGINS, default the embedded Web UI's). */
  codecCorsOrigins: readonly string[];
}

/** Thrown when the environment does not parse; the message lists every problem. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const rootDir = path.resolve(__dirname, '..');

/** Parses an environment (default: `process.env`) into a frozen Config. */
export function loadConfig(source: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const parsed = checkedEnvSchema.safeParse(source);
  const lines = parsed.success ? [] : parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
  // The keys are checked even when other settings are wrong, so one start-up lists every problem.
  const keyring = parseKeyring(str(source.PAYLOAD_CODEC_KEYS), str(source.PAYLOAD_CODEC_KEY_ID), { production: source.NODE_ENV === 'production' });
  if (!keyring.ok) lines.push(...keyring.problems.map((p) => `  ${p.setting}: ${p.message}`));
  const origins = parsed.success ? corsOrigins(parsed.data) : { ok: true as const, origins: [] };
  if (!origins.ok) lines.push(`  CODEC_CORS_ORIGINS: ${origins.message}`);
  if (!parsed.success || !keyring.ok || !origins.ok) throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  const env = parsed.data;
  return Object.freeze({
    ...env,
    rootDir,
    dataDir: path.resolve(rootDir, env.DATA_DIR),
    payloadCodecKeys: keyring.keyring,
    codecCorsOrigins: Object.freeze(origins.origins),
  });
}

function str(value: string | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** CODEC_CORS_ORIGINS as origins (`scheme://host[:port]`), or the embedded Web UI's two spellings. */
function corsOrigins(env: Env): { ok: true; origins: string[] } | { ok: false; message: string } {
  if (env.CODEC_CORS_ORIGINS === undefined) {
    const port = env.EMBEDDED_TEMPORAL_UI_PORT;
    return { ok: true, origins: [`http://127.0.0.1:${port}`, `http://localhost:${port}`] };
  }
  const origins = env.CODEC_CORS_ORIGINS.split(',').map((o) => o.trim()).filter((o) => o !== '');
  for (const origin of origins) {
    let parsedOrigin: string | undefined;
    try {
      parsedOrigin = new URL(origin).origin;
    } catch {
      parsedOrigin = undefined;
    }
    if (parsedOrigin !== origin) return { ok: false, message: `"${origin}" is not an origin like http://host:port (no path, no trailing slash)` };
  }
  return { ok: true, origins };
}
