/**
 * The edge's scripts (edge_admit.lua, edge_release.lua): one round trip before a
 * workflow starts, and one when an admitted request's response has ended.
 */
import type { Redis } from './client';
import { register as defaultRegistry, type Registry } from 'prom-client';
import type { RateLimits, RequestLimits } from '../edge/limits';
import { CacheKeys } from './cache-keys';
import { QuotaScriptName } from './lua-source';
import { UnexpectedScriptReplyError } from './script-replies';
import { createScriptRunner, micros } from './script-runner';

export const EdgeStatus = {
  admitted: 'admitted',
  duplicate: 'duplicate',
  insufficientQuota: 'insufficient_quota',
  budgetExceeded: 'budget_exceeded',
  rateLimitRequests: 'rate_limit_requests',
  rateLimitTokens: 'rate_limit_tokens',
  parallelRequests: 'parallel_requests',
  tenantMissing: 'tenant_missing',
  keyMissing: 'key_missing',
} as const;
export type EdgeStatus = (typeof EdgeStatus)[keyof typeof EdgeStatus];

/** One limit's state for OpenAI's x-ratelimit-* headers; null when neither tenant nor key has such a limit. */
export interface LimitState {
  limit: number;
  remaining: number;
  resetMs: number;
}

export interface EdgeDecision {
  status: EdgeStatus;
  /** When a retry can pass a rate limit; 0 otherwise. */
  retryAfterMs: number;
  requests: LimitState | null;
  tokens: LimitState | null;
}

export interface EdgeRequest {
  tenantId: string;
  apiKeyId: string;
  requestId: string;
  estimateMicros: number;
  estimateTokens: number;
  limits: RequestLimits;
}

const limitArg = (value: number | null): string => (value === null ? '-1' : micros('limit', value, { min: 1 }));
const limitArgs = (l: RateLimits): string[] => [limitArg(l.rpm), limitArg(l.tpm), limitArg(l.maxParallel)];

function parseEdgeReply(reply: unknown): EdgeDecision {
  const statuses = Object.values(EdgeStatus) as string[];
  if (!Array.isArray(reply) || reply.length !== 8 || !statuses.includes(reply[0] as string) || !reply.slice(1).every((v) => Number.isSafeInteger(v))) {
    throw new UnexpectedScriptReplyError(QuotaScriptName.edgeAdmit, reply);
  }
  const [status, retryAfterMs, reqLimit, reqLeft, reqReset, tokLimit, tokLeft, tokReset] = reply as [EdgeStatus, ...number[]];
  const state = (limit = -1, remaining = 0, resetMs = 0): LimitState | null => (limit < 0 ? null : { limit, remaining, resetMs });
  return { status, retryAfterMs: retryAfterMs ?? 0, requests: state(reqLimit, reqLeft, reqReset), tokens: state(tokLimit, tokLeft, tokReset) };
}

export function createEdgeScripts(redis: Redis, options: { registry?: Registry } = {}) {
  const run = createScriptRunner(redis, options.registry ?? defaultRegistry);
  const tokenKeys = (tenantId: string, apiKeyId: string): string[] => [CacheKeys.rateLimit(tenantId, 'tpm'), CacheKeys.rateLimit(tenantId, 'tpm', apiKeyId)];
  const leaseKeys = (tenantId: string, apiKeyId: string): string[] => [CacheKeys.inflightLeases(tenantId), CacheKeys.inflightLeases(tenantId, apiKeyId)];

  return {
    /** edge_admit.lua: refuse what cannot pass, else take the rate-limit units and the leases. */
    async admit(req: EdgeRequest, leaseMs: number): Promise<EdgeDecision> {
      const { tenantId, apiKeyId } = req;
      const keys = [
        CacheKeys.tenantQuota(tenantId),
        CacheKeys.apiKeyBudget(tenantId, apiKeyId),
        CacheKeys.rateLimit(tenantId, 'rpm'),
        CacheKeys.rateLimit(tenantId, 'tpm'),
        CacheKeys.rateLimit(tenantId, 'rpm', apiKeyId),
        CacheKeys.rateLimit(tenantId, 'tpm', apiKeyId),
        ...leaseKeys(tenantId, apiKeyId),
        CacheKeys.request(tenantId, req.requestId),
      ];
      const args = [
        micros('estimateMicros', req.estimateMicros, { min: 0 }),
        micros('estimateTokens', req.estimateTokens, { min: 0 }),
        req.requestId,
        micros('leaseMs', leaseMs, { min: 1 }),
        ...limitArgs(req.limits.tenant),
        ...limitArgs(req.limits.key),
      ];
      return parseEdgeReply(await run(QuotaScriptName.edgeAdmit, keys, args));
    },

    /** Extends the request's in-flight leases while its response runs (on Redis' clock, as edge_admit.lua reads them). */
    async renewLeases(tenantId: string, apiKeyId: string, requestId: string, leaseMs: number): Promise<void> {
      const [seconds, micros] = await redis.time();
      const expiry = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) + leaseMs;
      await Promise.all(leaseKeys(tenantId, apiKeyId).map((key) => redis.zadd(key, 'XX', expiry, requestId)));
    },

    /** edge_release.lua: gives the leases back and settles the tokens-per-minute share from the estimate to the real count. */
    async release(req: Omit<EdgeRequest, 'estimateMicros'>, realTokens: number): Promise<void> {
      const { tenantId, apiKeyId } = req;
      micros('realTokens', realTokens, { min: 0 });
      const delta = realTokens - req.estimateTokens;
      const reply = await run(QuotaScriptName.edgeRelease, [...tokenKeys(tenantId, apiKeyId), ...leaseKeys(tenantId, apiKeyId)], [
        req.requestId,
        String(delta),
        limitArg(req.limits.tenant.tpm),
        limitArg(req.limits.key.tpm),
      ]);
      if (!Array.isArray(reply) || reply.length !== 2) throw new UnexpectedScriptReplyError(QuotaScriptName.edgeRelease, reply);
    },
  };
}

export type EdgeScripts = ReturnType<typeof createEdgeScripts>;
