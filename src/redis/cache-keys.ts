/**
 * CacheKeys (M1.3): the one module that names every Redis key of the system.
 *
 * Every key of one tenant carries the hash tag `{t:<tenantId>}`, so a Lua call that
 * touches the tenant quota, an API key budget and a request record stays inside one
 * Redis Cluster slot (a cross-slot script would be refused by the cluster).
 *
 * Nobody else builds key strings: a typo in a hand-built key would silently read an
 * empty counter and admit a request against a quota that does not exist.
 */

/** Every key starts with this prefix, so the billing keys can share a Redis with others. */
export const CACHE_KEY_PREFIX = 'bq';

/** Longest id accepted in a key; longer ids are a caller bug, not a tenant name. */
export const MAX_CACHE_KEY_ID_LENGTH = 256;

/** Thrown when an id that would become part of a cache key is empty, too long or contains `{`/`}`. */
export class InvalidCacheKeyIdError extends Error {
  override name = 'InvalidCacheKeyIdError';

  constructor(
    readonly idKind: string,
    readonly id: unknown,
    reason: string,
  ) {
    super(`Invalid ${idKind} for a cache key: ${reason}`);
  }
}

/**
 * Checks an id before it enters a key. Braces are refused because Redis Cluster
 * hashes only the text between the first `{` and the next `}`: an id with a brace
 * would move the key out of its tenant's slot.
 */
function checkedId(idKind: string, id: string): string {
  if (typeof id !== 'string' || id.length === 0) {
    throw new InvalidCacheKeyIdError(idKind, id, 'it must be a non-empty string');
  }
  if (id.length > MAX_CACHE_KEY_ID_LENGTH) {
    throw new InvalidCacheKeyIdError(idKind, id, `it is longer than ${MAX_CACHE_KEY_ID_LENGTH} characters`);
  }
  if (id.includes('{') || id.includes('}')) {
    throw new InvalidCacheKeyIdError(idKind, id, 'it must not contain "{" or "}"');
  }
  return id;
}

function tenantTag(tenantId: string): string {
  return `{t:${checkedId('tenant id', tenantId)}}`;
}

export const CacheKeys = {
  /** The Redis Cluster hash tag shared by every key of one tenant. */
  hashTag(tenantId: string): string {
    return tenantTag(tenantId);
  },

  /**
   * HASH { limit_micros, used_micros, warmup_id, version }: the tenant quota; used includes open
   * reservations. warmup_id names the build of the hash, version counts the scripts that moved it
   * (the consistency check's compare-and-set token).
   */
  tenantQuota(tenantId: string): string {
    return `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:quota`;
  },

  /** HASH { budget_micros (-1 = unlimited), spent_micros, warmup_id, version }: one API key's budget; spent includes open reservations. */
  apiKeyBudget(tenantId: string, apiKeyId: string): string {
    return `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:key:${checkedId('api key id', apiKeyId)}`;
  },

  /**
   * HASH { reserved_micros, api_key_id, reserved_at, tenant_adjusted, key_adjusted, cost_micros,
   * tenant_/key_counted_micros, tenant_/key_warmup_id }: the per-request record that makes every
   * admission and adjustment script idempotent, and tells settlement what a counter holds for it.
   */
  request(tenantId: string, requestId: string): string {
    return `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:req:${checkedId('request id', requestId)}`;
  },

  /**
   * HASH { used_micros, build, version }: one calendar window of a budget window cap (issue 12,
   * docs/budget-windows.md). `windowId` names the subject, the period and the window's start,
   * so the next window is a new key that starts at 0; the hash expires after its window.
   */
  budgetWindow(tenantId: string, windowId: string): string {
    return `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:win:${checkedId('budget window id', windowId)}`;
  },

  /** STREAM relaying a request's upstream chunks from the worker to the API process. */
  requestStream(tenantId: string, requestId: string): string {
    return `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:stream:${checkedId('request id', requestId)}`;
  },

  /**
   * STRING: a rate limit's GCRA state (theoretical arrival time, microseconds) for the
   * tenant, or for one of its keys when `apiKeyId` is given.
   */
  rateLimit(tenantId: string, limit: 'rpm' | 'tpm', apiKeyId?: string): string {
    const base = `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:rl:${limit}`;
    return apiKeyId === undefined ? base : `${base}:${checkedId('api key id', apiKeyId)}`;
  },

  /** ZSET request id -> lease expiry (ms): the in-flight requests of the tenant, or of one of its keys. */
  inflightLeases(tenantId: string, apiKeyId?: string): string {
    const base = `${CACHE_KEY_PREFIX}:${tenantTag(tenantId)}:inflight`;
    return apiKeyId === undefined ? base : `${base}:${checkedId('api key id', apiKeyId)}`;
  },

  /**
   * HASH { owner, fence, info, acquired_at } with a TTL: the lock of one conversation (M7).
   * Conversation ids are global (a conversation belongs to one tenant, `info` names it), so
   * the key carries the conversation's own hash tag, not a tenant's; its fencing counter shares it.
   */
  conversationLock(conversationId: string): string {
    return `${CACHE_KEY_PREFIX}:lock:{c:${checkedId('conversation id', conversationId)}}`;
  },

  /** STRING counter, no expiry: the last fencing token handed out for a conversation's lock; only ever grows. */
  conversationLockFence(conversationId: string): string {
    return `${CacheKeys.conversationLock(conversationId)}:fence`;
  },

  /**
   * STRING (JSON AffinityState, src/routing/affinity.ts) with an idle TTL: the conversation's
   * routing affinity (M8). It carries the conversation's hash tag, like its lock.
   */
  conversationAffinity(conversationId: string): string {
    return `${CACHE_KEY_PREFIX}:affinity:{c:${checkedId('conversation id', conversationId)}}`;
  },

  /**
   * STRING counter with the failure window as TTL: an upstream channel's recent failures
   * before its first byte. Every channel health key shares the hash tag `{channels}`, so one
   * MGET reads the cool-downs of all channels of a route.
   */
  channelFailures(channelId: string): string {
    return `${CACHE_KEY_PREFIX}:{channels}:failures:${checkedId('channel id', channelId)}`;
  },

  /** STRING "1" with the cool-down as TTL: the channel is cooled down (routing skips it while healthy ones exist). */
  channelCooldown(channelId: string): string {
    return `${CACHE_KEY_PREFIX}:{channels}:cooldown:${checkedId('channel id', channelId)}`;
  },

  /** Pub/sub channel (not a key): lock_release.lua publishes on it, so waiters retry at once. */
  conversationLockReleased(conversationId: string): string {
    return `${CacheKeys.conversationLock(conversationId)}:released`;
  },

  /** STRING (JSON): cached lookup from an API key's hash to its id, tenant and status (keys are stored hashed only). */
  apiKeyLookup(keyHash: string): string {
    return `${CACHE_KEY_PREFIX}:apikey:${checkedId('api key hash', keyHash)}`;
  },

  /** STRING "1", expiring with the session: a codec-server operator session ended by logout (src/api/codec-session.ts). */
  codecSessionRevoked(sessionId: string): string {
    return `${CACHE_KEY_PREFIX}:codec-session-revoked:${checkedId('codec session id', sessionId)}`;
  },
} as const;

export type CacheKeys = typeof CacheKeys;
