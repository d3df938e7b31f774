/**
 * The quota scripts runner (M1.2): every lua/*.lua script is loaded once and called
 * by SHA. A NOSCRIPT answer (after SCRIPT FLUSH, a Redis restart or a failover to a
 * replica that never saw SCRIPT LOAD) reloads the script and retries once, so callers
 * never see it. The SHA is computed locally, so calls work before load() as well.
 *
 * Redis scripts cannot include one another, so shared Lua lives in lua/lib/*.lua: a
 * script names what it needs on a `-- requires: lib/<name>.lua` line and the loader
 * (luaScript) prepends those libraries. Redis only ever sees the assembled source, and
 * the SHA is that source's, so NOSCRIPT reloads send exactly what the SHA names.
 *
 * Errors keep their meaning for the caller: a `QuotaScriptRejectedError` means Redis
 * answered (bad arguments, corrupt counter) and falling back to PostgreSQL would not
 * help; any other error (connection refused, timeout) means Redis is unreachable (M2.3).
 */
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ChainableCommander, Redis } from 'ioredis';
import { Counter, Histogram, register as defaultRegistry, type Registry } from 'prom-client';
import { CacheKeys } from './cache-keys';

export const QuotaScriptName = {
  quotaCheck: 'quota_check',
  quotaDeduct: 'quota_deduct',
  apiKeyBudgetDeduct: 'apikey_budget_deduct',
  cacheWarmup: 'cache_warmup',
} as const;
export type QuotaScriptName = (typeof QuotaScriptName)[keyof typeof QuotaScriptName];

/** Where the .lua files live: <project root>/lua, found from this file so tsx, jest and node agree. */
export const LUA_DIR = path.resolve(__dirname, '..', '..', 'lua');

/** A script as Redis runs it: its libraries and its own file, and the SHA1 Redis files it under. */
export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

/** Thrown when Redis answers a script call with an error: malformed arguments, a corrupt counter, a wrong key type. */
export class QuotaScriptRejectedError extends Error {
  override name = 'QuotaScriptRejectedError';

  constructor(
    readonly script: QuotaScriptName,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${script}: ${message}`, options);
  }
}

/** Thrown when a caller passes an amount that is not a safe integer (money is integer micros) or is out of range. */
export class InvalidMicrosError extends Error {
  override name = 'InvalidMicrosError';
}

/** Thrown when a `-- requires:` line names something other than lib/<name>.lua, or libraries require each other in a cycle. */
export class LuaLibraryError extends Error {
  override name = 'LuaLibraryError';
}

const REQUIRES_LINE = /^-- requires: (.+)$/gm;
const LIBRARY_PATH = /^lib\/[a-z0-9_]+\.lua$/;

function requiredLibraries(file: string, text: string): string[] {
  const libs = [...text.matchAll(REQUIRES_LINE)].flatMap((m) => (m[1] ?? '').split(',').map((lib) => lib.trim()));
  for (const lib of libs) {
    if (!LIBRARY_PATH.test(lib)) throw new LuaLibraryError(`${file} requires ${JSON.stringify(lib)}: expected lib/<name>.lua`);
  }
  return libs;
}

/**
 * The source Redis runs for lua/<name>.lua: every library it requires, directly or
 * through another library, each once and after its own requirements, then the script.
 * Libraries only define locals, so prepending them changes no script's behaviour.
 */
export function assembleLuaSource(name: string, luaDir: string = LUA_DIR): string {
  const parts: string[] = [];
  const included = new Set<string>();
  const include = (file: string, requiredBy: readonly string[]): void => {
    if (requiredBy.includes(file)) throw new LuaLibraryError(`Lua libraries require each other in a cycle: ${[...requiredBy, file].join(' -> ')}`);
    const text = readFileSync(path.join(luaDir, file), 'utf8');
    for (const lib of requiredLibraries(file, text)) {
      if (!included.has(lib)) include(lib, [...requiredBy, file]);
    }
    included.add(file);
    parts.push(text.endsWith('\n') ? text : `${text}\n`);
  };
  include(`${name}.lua`, []);
  return parts.join('');
}

const scripts = new Map<string, LuaScript>();

/** Assembles lua/<name>.lua once per process; every loader (this runner, the tenant repository) goes through here. */
export function luaScript(name: string): LuaScript {
  let loaded = scripts.get(name);
  if (!loaded) {
    const source = assembleLuaSource(name);
    loaded = { source, sha: createHash('sha1').update(source).digest('hex') };
    scripts.set(name, loaded);
  }
  return loaded;
}

function micros(label: string, value: number, opts: { min?: number } = {}): string {
  if (!Number.isSafeInteger(value)) throw new InvalidMicrosError(`${label} must be a safe integer, got ${value}`);
  if (opts.min !== undefined && value < opts.min) throw new InvalidMicrosError(`${label} must be >= ${opts.min}, got ${value}`);
  // String(n) of a safe integer is the canonical decimal form the scripts require.
  return String(value);
}

function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('NOSCRIPT');
}

/** ioredis' ReplyError is typed `any`; its name identifies an error answered by Redis itself. */
function isReplyError(err: unknown): err is Error {
  return err instanceof Error && err.name === 'ReplyError';
}

interface ScriptMetrics {
  duration: Histogram<'script'>;
  reloads: Counter<'script'>;
}

/** One set of metrics per registry, shared by every runner (a second runner must not re-register). */
function scriptMetrics(registry: Registry): ScriptMetrics {
  const durationName = 'billing_redis_script_duration_seconds';
  const reloadsName = 'billing_redis_script_reloads_total';
  const existingDuration = registry.getSingleMetric(durationName);
  const existingReloads = registry.getSingleMetric(reloadsName);
  const duration =
    existingDuration instanceof Histogram
      ? (existingDuration as Histogram<'script'>)
      : new Histogram({
          name: durationName,
          help: 'Latency of one quota Lua script call, NOSCRIPT reload included',
          labelNames: ['script'] as const,
          buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
          registers: [registry],
        });
  const reloads =
    existingReloads instanceof Counter
      ? (existingReloads as Counter<'script'>)
      : new Counter({
          name: reloadsName,
          help: 'Quota Lua scripts reloaded after a NOSCRIPT answer (script cache flushed or Redis restarted)',
          labelNames: ['script'] as const,
          registers: [registry],
        });
  return { duration, reloads };
}

/** Remaining amounts a new reservation could still take (never below 0). */
export interface RemainingBalance {
  tenantRemainingMicros: number;
  /** null = the key is unlimited. */
  keyRemainingMicros: number | null;
}

/** quota_check.lua's statuses, see the script header for each. */
export const ReserveStatus = {
  reserved: 'reserved',
  duplicate: 'duplicate',
  insufficientQuota: 'insufficient_quota',
  budgetExceeded: 'budget_exceeded',
  tenantMissing: 'tenant_missing',
  keyMissing: 'key_missing',
} as const;
export type ReserveStatus = (typeof ReserveStatus)[keyof typeof ReserveStatus];

/** quota_check.lua's answer: admitted (reserved now or before), denied, or a counter to warm up first. */
export type ReserveResult =
  | ({ status: 'reserved' | 'duplicate'; reservedMicros: number } & RemainingBalance)
  | ({ status: 'insufficient_quota' | 'budget_exceeded' } & RemainingBalance)
  | { status: 'tenant_missing' | 'key_missing' };

/** quota_deduct.lua's answer; deltaMicros is what settling to cost moved used by (or moved first, for a duplicate); remainingMicros = limit - used, negative after a settled overage. */
export type SettleTenantResult =
  | { status: 'applied'; deltaMicros: number; usedMicros: number; remainingMicros: number }
  | { status: 'duplicate'; deltaMicros: number }
  | { status: 'tenant_missing' };

/** apikey_budget_deduct.lua's answer; deltaMicros as for the tenant; remainingMicros is null for an unlimited key. */
export type SettleKeyResult =
  | { status: 'applied'; deltaMicros: number; spentMicros: number; remainingMicros: number | null }
  | { status: 'duplicate'; deltaMicros: number }
  | { status: 'key_missing' };

/** Thrown when a script's reply does not have the shape its header promises (a script/runner version mismatch). */
export class UnexpectedScriptReplyError extends Error {
  override name = 'UnexpectedScriptReplyError';

  constructor(script: QuotaScriptName, reply: unknown) {
    super(`${script} returned an unexpected reply: ${JSON.stringify(reply)}`);
  }
}

/** Splits a reply into its status and integer fields, checking the count and that each is a safe integer. */
function replyFields(name: QuotaScriptName, reply: unknown, counts: Record<string, number>): [string, ...number[]] {
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') throw new UnexpectedScriptReplyError(name, reply);
  const [status, ...rest] = reply as [string, ...unknown[]];
  if (counts[status] !== rest.length || !rest.every((v) => Number.isSafeInteger(v))) {
    throw new UnexpectedScriptReplyError(name, reply);
  }
  return [status, ...(rest as number[])];
}

/** Parses quota_check.lua's reply (also for replies collected from a pipeline). */
export function parseReserveReply(reply: unknown): ReserveResult {
  const fieldCounts = Object.fromEntries(Object.values(ReserveStatus).map((status) => [status, 3]));
  const [status, reserved = 0, tenantLeft = 0, keyLeft = 0] = replyFields(QuotaScriptName.quotaCheck, reply, fieldCounts);
  const balance: RemainingBalance = { tenantRemainingMicros: tenantLeft, keyRemainingMicros: keyLeft < 0 ? null : keyLeft };
  switch (status) {
    case 'reserved':
    case 'duplicate':
      return { status, reservedMicros: reserved, ...balance };
    case 'insufficient_quota':
    case 'budget_exceeded':
      return { status, ...balance };
    default:
      return { status: status as 'tenant_missing' | 'key_missing' };
  }
}

function parseSettleTenantReply(reply: unknown): SettleTenantResult {
  const [status, delta = 0, used = 0, left = 0] = replyFields(QuotaScriptName.quotaDeduct, reply, {
    applied: 3,
    duplicate: 1,
    tenant_missing: 0,
  });
  if (status === 'applied') return { status, deltaMicros: delta, usedMicros: used, remainingMicros: left };
  if (status === 'duplicate') return { status, deltaMicros: delta };
  return { status: 'tenant_missing' };
}

function parseSettleKeyReply(reply: unknown): SettleKeyResult {
  const [status, delta = 0, spent = 0, budget = 0] = replyFields(QuotaScriptName.apiKeyBudgetDeduct, reply, {
    applied: 3,
    duplicate: 1,
    key_missing: 0,
  });
  if (status === 'applied') {
    return { status, deltaMicros: delta, spentMicros: spent, remainingMicros: budget < 0 ? null : budget - spent };
  }
  if (status === 'duplicate') return { status, deltaMicros: delta };
  return { status: 'key_missing' };
}

export interface QuotaScriptsOptions {
  /** Expiry of the per-request record, refreshed by every script (config RESERVATION_TTL_SECONDS). */
  ttlSeconds: number;
  /** @default prom-client's default register */
  registry?: Registry;
}

export interface ReserveArgs {
  tenantId: string;
  apiKeyId: string;
  requestId: string;
  /** The worst-case cost to reserve, non-negative integer micros. */
  amountMicros: number;
  /** Admission time, stored as reserved_at. */
  nowMs: number;
}

export interface SettleTenantArgs {
  tenantId: string;
  requestId: string;
  /** The request's final cost, non-negative integer micros; 0 for a void. The script subtracts what the counter holds. */
  costMicros: number;
  /**
   * The counter was missing when this request was settled, AFTER its ledger row was
   * committed or voided, and the caller has warmed it since: unless the warm-up that built
   * the counter counted the reservation, the counter already holds the final cost.
   * @default false
   */
  afterWarmup?: boolean;
}

export interface SettleKeyArgs extends SettleTenantArgs {
  apiKeyId: string;
}

/**
 * The requests a warm-up counts in the counter it builds; cache_warmup.lua marks their
 * records so settlement knows what the counter holds for each (see its header).
 */
export interface WarmupMarks {
  /** Pending reservations included in used/spent, read in the same ledger snapshot. */
  pending?: ReadonlyArray<{ requestId: string; reservedMicros: number }>;
  /** The request whose settlement found the counter missing: the snapshot, read after its ledger commit, holds its final cost. */
  settled?: { requestId: string; costMicros: number };
}

export interface TenantCounters {
  limitMicros: number;
  usedMicros: number;
}

export interface KeyCounters {
  /** null = unlimited (stored as -1). */
  budgetMicros: number | null;
  spentMicros: number;
}

export function createQuotaScripts(redis: Redis, options: QuotaScriptsOptions) {
  const ttl = micros('ttlSeconds', options.ttlSeconds, { min: 1 });
  const metrics = scriptMetrics(options.registry ?? defaultRegistry);

  async function run(name: QuotaScriptName, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    const { sha, source } = luaScript(name);
    const stopTimer = metrics.duration.startTimer({ script: name });
    try {
      try {
        return await redis.evalsha(sha, keys.length, ...keys, ...args);
      } catch (err) {
        if (!isNoScript(err)) throw err;
        metrics.reloads.inc({ script: name });
        await redis.script('LOAD', source);
        return await redis.evalsha(sha, keys.length, ...keys, ...args);
      }
    } catch (err) {
      if (isReplyError(err)) throw new QuotaScriptRejectedError(name, err.message, { cause: err });
      throw err;
    } finally {
      stopTimer();
    }
  }

  /** cache_warmup.lua: the hash, and the records of `marks` with their role and amount; a fresh warmup_id per call. */
  async function warm(kind: 'tenant' | 'key', tenantId: string, hashKey: string, values: [limit: string, used: string], marks: WarmupMarks): Promise<boolean> {
    const records: Array<{ requestId: string; role: 'pending' | 'settled'; amount: string }> = (marks.pending ?? []).map((p) => ({
      requestId: p.requestId,
      role: 'pending',
      amount: micros('reservedMicros', p.reservedMicros, { min: 0 }),
    }));
    if (marks.settled) records.push({ requestId: marks.settled.requestId, role: 'settled', amount: micros('costMicros', marks.settled.costMicros, { min: 0 }) });
    const keys = [hashKey, ...records.map((r) => CacheKeys.request(tenantId, r.requestId))];
    const reply = await run(QuotaScriptName.cacheWarmup, keys, [kind, randomUUID(), ttl, ...values, ...records.flatMap((r) => [r.role, r.amount])]);
    return reply === 1;
  }

  function reserveCall(args: ReserveArgs): { keys: string[]; argv: string[] } {
    return {
      keys: [
        CacheKeys.tenantQuota(args.tenantId),
        CacheKeys.apiKeyBudget(args.tenantId, args.apiKeyId),
        CacheKeys.request(args.tenantId, args.requestId),
      ],
      argv: [micros('amountMicros', args.amountMicros, { min: 0 }), ttl, args.apiKeyId, micros('nowMs', args.nowMs, { min: 0 })],
    };
  }

  return {
    /** SCRIPT LOAD of every script; optional (calls reload on demand) but keeps the first requests fast. */
    async load(): Promise<void> {
      for (const name of Object.values(QuotaScriptName)) {
        const { sha, source } = luaScript(name);
        const loadedSha = await redis.script('LOAD', source);
        if (loadedSha !== sha) throw new QuotaScriptRejectedError(name, `SCRIPT LOAD returned ${String(loadedSha)}, expected ${sha}`);
      }
    },

    /** Admission (M2.1): checks and reserves against the tenant quota and the key budget atomically. */
    async reserve(args: ReserveArgs): Promise<ReserveResult> {
      const { keys, argv } = reserveCall(args);
      return parseReserveReply(await run(QuotaScriptName.quotaCheck, keys, argv));
    },

    /**
     * Queues an admission on a pipeline (batches, the benchmark); parse each reply with parseReserveReply.
     * A pipeline cannot retry one command on NOSCRIPT, so call load() before building it.
     */
    reserveInPipeline(pipeline: ChainableCommander, args: ReserveArgs): void {
      const { keys, argv } = reserveCall(args);
      pipeline.evalsha(luaScript(QuotaScriptName.quotaCheck).sha, keys.length, ...keys, ...argv);
    },

    /**
     * Settles a request on the tenant quota to its final cost, once per request (M3.2):
     * applies cost minus the reservation the counter holds for it (see quota_deduct.lua).
     */
    async settleTenant(args: SettleTenantArgs): Promise<SettleTenantResult> {
      const keys = [CacheKeys.tenantQuota(args.tenantId), CacheKeys.request(args.tenantId, args.requestId)];
      const reply = await run(QuotaScriptName.quotaDeduct, keys, [micros('costMicros', args.costMicros, { min: 0 }), ttl, args.afterWarmup ? '1' : '0']);
      return parseSettleTenantReply(reply);
    },

    /** Settles a request on its API key's budget to its final cost, once per request (M3.3). */
    async settleKeyBudget(args: SettleKeyArgs): Promise<SettleKeyResult> {
      const keys = [CacheKeys.apiKeyBudget(args.tenantId, args.apiKeyId), CacheKeys.request(args.tenantId, args.requestId)];
      const reply = await run(QuotaScriptName.apiKeyBudgetDeduct, keys, [micros('costMicros', args.costMicros, { min: 0 }), ttl, args.afterWarmup ? '1' : '0']);
      return parseSettleKeyReply(reply);
    },

    /**
     * Creates the tenant quota hash unless it exists (M2.2); true when this call created it.
     * In the same atomic call the records of `marks` are marked as counted by the new hash.
     */
    async warmTenant(tenantId: string, counters: TenantCounters, marks: WarmupMarks = {}): Promise<boolean> {
      const values: [string, string] = [micros('limitMicros', counters.limitMicros, { min: 0 }), micros('usedMicros', counters.usedMicros)];
      return warm('tenant', tenantId, CacheKeys.tenantQuota(tenantId), values, marks);
    },

    /** Creates the API key budget hash unless it exists (M2.2), marking `marks` as warmTenant does; true when this call created it. */
    async warmKey(tenantId: string, apiKeyId: string, counters: KeyCounters, marks: WarmupMarks = {}): Promise<boolean> {
      const budget = counters.budgetMicros === null ? '-1' : micros('budgetMicros', counters.budgetMicros, { min: 0 });
      return warm('key', tenantId, CacheKeys.apiKeyBudget(tenantId, apiKeyId), [budget, micros('spentMicros', counters.spentMicros)], marks);
    },
  };
}

export type QuotaScripts = ReturnType<typeof createQuotaScripts>;
