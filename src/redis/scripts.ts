/**
 * The quota scripts (M1.2): admission, settlement, warm-up and heal, release and limit raise,
 * each a typed call of one lua/*.lua script through the runner (./script-runner.ts:
 * by SHA, reloaded on NOSCRIPT). How a script's source is assembled: lua-source.ts;
 * its replies: script-replies.ts. The edge's scripts: ./edge-scripts.ts.
 */
import { randomUUID } from 'node:crypto';
import type { ChainableCommander } from 'ioredis';
import { masterNodes, type Redis } from './client';
import { register as defaultRegistry, type Registry } from 'prom-client';
import { CacheKeys } from './cache-keys';
import { QuotaScriptName, luaScript } from './lua-source';
import { createScriptRunner, micros, QuotaScriptRejectedError } from './script-runner';
import {
  parseLimitRaiseReply,
  parseReleaseReply,
  parseReserveReply,
  parseSettleKeyReply,
  parseSettleTenantReply,
  parseWarmupReply,
  parseWindowedReserveReply,
  parseWindowSettleReply,
  type WindowedReserveResult,
  type LimitRaiseResult,
  type ReleaseResult,
  type ReserveResult,
  type SettleKeyResult,
  type SettleTenantResult,
} from './script-replies';

export * from './lua-source';
export * from './script-replies';
export { InvalidMicrosError, QuotaScriptRejectedError } from './script-runner';

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

/** One budget window a reservation must also fit (issue 12): its counter, its cap and whose cap it is. */
export interface ReserveWindow {
  /** The window id (src/services/budget-windows.ts), the counter's name. */
  windowId: string;
  limitMicros: number;
  subject: 'tenant' | 'key';
}

/** A budget window counter to build from the ledger (window_warmup.lua). */
export interface WindowWarmupArgs {
  tenantId: string;
  windowId: string;
  /** The window's ledger usage (committed + pending). */
  usedMicros: number;
  /** The pending reservations it counts, from the same snapshot. */
  pending: ReadonlyArray<{ requestId: string; reservedMicros: number }>;
  /** When the hash may expire: after the window's end (plus a grace for late readers). */
  expireAtMs: number;
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
  /**
   * Requests the snapshot shows settled whose Redis settlement may still come (the consistency
   * check passes the subject's rows settled within the request record TTL): each is marked with
   * its cost, so a settlement after the build applies 0.
   */
  recentlySettled?: ReadonlyArray<{ requestId: string; costMicros: number }>;
}

/**
 * What a reader saw of a counter hash: its warmup_id ('' when it has none) and version (0
 * when it has none). Every script that moves used/spent/limit bumps the version and every
 * build writes a fresh warmup_id, so an equal token means the counter did not move.
 */
export interface CounterToken {
  warmupId: string;
  version: number;
}

/** create: only when the hash is missing (a warm-up); replace: only over the counter `expected` names (a heal). */
type BuildMode = { mode: 'create' } | { mode: 'replace'; expected: CounterToken };

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
  const run = createScriptRunner(redis, options.registry ?? defaultRegistry);

  /** cache_warmup.lua: the hash, and the records of `marks` with their role and amount; a fresh warmup_id per call. */
  async function build(kind: 'tenant' | 'key', tenantId: string, hashKey: string, values: [limit: string, used: string], marks: WarmupMarks, how: BuildMode): Promise<boolean> {
    const records: Array<{ requestId: string; role: 'pending' | 'settled'; amount: string }> = (marks.pending ?? []).map((p) => ({
      requestId: p.requestId,
      role: 'pending',
      amount: micros('reservedMicros', p.reservedMicros, { min: 0 }),
    }));
    const settled = [...(marks.settled ? [marks.settled] : []), ...(marks.recentlySettled ?? [])];
    for (const s of settled) records.push({ requestId: s.requestId, role: 'settled', amount: micros('costMicros', s.costMicros, { min: 0 }) });
    const keys = [hashKey, ...records.map((r) => CacheKeys.request(tenantId, r.requestId))];
    const guard = how.mode === 'replace' ? [how.expected.warmupId, micros('version', how.expected.version, { min: 0 })] : ['', '0'];
    const argv = [kind, randomUUID(), ttl, ...values, how.mode, ...guard, ...records.flatMap((r) => [r.role, r.amount])];
    return parseWarmupReply(await run(QuotaScriptName.cacheWarmup, keys, argv));
  }

  const tenantValues = (counters: TenantCounters): [string, string] => [micros('limitMicros', counters.limitMicros, { min: 0 }), micros('usedMicros', counters.usedMicros)];
  const keyValues = (counters: KeyCounters): [string, string] => [
    counters.budgetMicros === null ? '-1' : micros('budgetMicros', counters.budgetMicros, { min: 0 }),
    micros('spentMicros', counters.spentMicros),
  ];

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

  function windowedReserveCall(args: ReserveArgs, windows: readonly ReserveWindow[]): { keys: string[]; argv: string[] } {
    const { keys, argv } = reserveCall(args);
    for (const w of windows) {
      keys.push(CacheKeys.budgetWindow(args.tenantId, w.windowId));
      argv.push(micros('limitMicros', w.limitMicros, { min: 0 }), w.subject);
    }
    return { keys, argv };
  }

  return {
    /**
     * Admission with budget windows (issue 12): quota, key budget and every window in ONE
     * atomic call; with no windows exactly reserve().
     */
    async reserveWithWindows(args: ReserveArgs, windows: readonly ReserveWindow[]): Promise<WindowedReserveResult> {
      const { keys, argv } = windowedReserveCall(args, windows);
      return parseWindowedReserveReply(await run(QuotaScriptName.quotaCheck, keys, argv), windows.length);
    },

    /**
     * Settles a request to `costMicros` on the windows its ledger row names (window_settle.lua),
     * once per window; returns the delta applied to each. A window whose counter is gone is skipped.
     */
    async settleWindows(args: { tenantId: string; requestId: string; windowIds: readonly string[]; costMicros: number }): Promise<number[]> {
      if (args.windowIds.length === 0) return [];
      const keys = [CacheKeys.request(args.tenantId, args.requestId), ...args.windowIds.map((id) => CacheKeys.budgetWindow(args.tenantId, id))];
      const reply = await run(QuotaScriptName.windowSettle, keys, [micros('costMicros', args.costMicros, { min: 0 }), ttl]);
      return parseWindowSettleReply(reply, args.windowIds.length);
    },

    /** When quota_check.lua first reserved a request (its record's reserved_at), or null without a record. */
    async reservedAt(tenantId: string, requestId: string): Promise<number | null> {
      const raw = await redis.hget(CacheKeys.request(tenantId, requestId), 'reserved_at');
      const at = raw === null ? Number.NaN : Number(raw);
      return Number.isSafeInteger(at) && at >= 0 ? at : null;
    },

    /** Creates a window counter from a ledger snapshot unless it exists; true when this call created it. */
    async warmWindow(args: WindowWarmupArgs): Promise<boolean> {
      const keys = [CacheKeys.budgetWindow(args.tenantId, args.windowId), ...args.pending.map((p) => CacheKeys.request(args.tenantId, p.requestId))];
      const argv = [randomUUID(), micros('usedMicros', args.usedMicros), micros('expireAtMs', args.expireAtMs, { min: 0 }), ttl, ...args.pending.map((p) => micros('reservedMicros', p.reservedMicros, { min: 0 }))];
      return parseWarmupReply(await run(QuotaScriptName.windowWarmup, keys, argv));
    },

    /**
     * SCRIPT LOAD of every script on every master (a cluster node caches only what it was sent);
     * optional (calls reload on demand) but keeps the first requests fast.
     */
    async load(): Promise<void> {
      for (const node of masterNodes(redis)) {
        for (const name of Object.values(QuotaScriptName)) {
          const { sha, source } = luaScript(name);
          const loadedSha = await node.script('LOAD', source);
          if (loadedSha !== sha) throw new QuotaScriptRejectedError(name, `SCRIPT LOAD returned ${String(loadedSha)}, expected ${sha}`);
        }
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
     * Gives back a fresh reservation whose pending ledger row could not be written, and
     * forgets the request, so Redis never counts what the ledger does not know.
     */
    async release(args: { tenantId: string; apiKeyId: string; requestId: string }): Promise<ReleaseResult> {
      const keys = [CacheKeys.tenantQuota(args.tenantId), CacheKeys.apiKeyBudget(args.tenantId, args.apiKeyId), CacheKeys.request(args.tenantId, args.requestId)];
      return parseReleaseReply(await run(QuotaScriptName.quotaRelease, keys, [args.apiKeyId]));
    },

    /**
     * Carries a raised quota limit (a committed top-up) into the cached tenant quota with
     * max() semantics, so top-ups whose calls arrive out of order still end at the latest limit.
     */
    async raiseTenantLimit(tenantId: string, limitMicros: number): Promise<LimitRaiseResult> {
      const reply = await run(QuotaScriptName.quotaLimitRaise, [CacheKeys.tenantQuota(tenantId)], [micros('limitMicros', limitMicros, { min: 0 })]);
      return parseLimitRaiseReply(reply);
    },

    /**
     * Creates the tenant quota hash unless it exists (M2.2); true when this call created it.
     * In the same atomic call the records of `marks` are marked as counted by the new hash.
     */
    async warmTenant(tenantId: string, counters: TenantCounters, marks: WarmupMarks = {}): Promise<boolean> {
      return build('tenant', tenantId, CacheKeys.tenantQuota(tenantId), tenantValues(counters), marks, { mode: 'create' });
    },

    /** Creates the API key budget hash unless it exists (M2.2), marking `marks` as warmTenant does; true when this call created it. */
    async warmKey(tenantId: string, apiKeyId: string, counters: KeyCounters, marks: WarmupMarks = {}): Promise<boolean> {
      return build('key', tenantId, CacheKeys.apiKeyBudget(tenantId, apiKeyId), keyValues(counters), marks, { mode: 'create' });
    },

    /**
     * The consistency check's heal (M4.3): overwrites the tenant quota hash with a ledger
     * snapshot, marking `marks` as warmTenant does, but only if the hash is still the counter
     * `expected` names (compare-and-set); a hash that is gone is created. False when the
     * counter moved since it was read: nothing changes, the caller reports it busy.
     */
    async replaceTenant(tenantId: string, counters: TenantCounters, marks: WarmupMarks, expected: CounterToken): Promise<boolean> {
      return build('tenant', tenantId, CacheKeys.tenantQuota(tenantId), tenantValues(counters), marks, { mode: 'replace', expected });
    },

    /** replaceTenant for an API key budget hash. */
    async replaceKey(tenantId: string, apiKeyId: string, counters: KeyCounters, marks: WarmupMarks, expected: CounterToken): Promise<boolean> {
      return build('key', tenantId, CacheKeys.apiKeyBudget(tenantId, apiKeyId), keyValues(counters), marks, { mode: 'replace', expected });
    },
  };
}

export type QuotaScripts = ReturnType<typeof createQuotaScripts>;
