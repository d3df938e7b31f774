/**
 * The routing affinity of each conversation, in Redis (CacheKeys.conversationAffinity):
 * loads the state for RoutingStep and applies a successful call's events (M8.3) with the
 * pure transition function (./affinity.ts). An idle conversation's state expires.
 *
 * Load-apply-save is not atomic: two concurrent calls of one conversation may lose one
 * success count (last writer wins). The conversation lock (M7) serialises a conversation's
 * requests in normal operation, and a lost count only delays binding by one success.
 */
import type { Redis } from '../redis/client';
import { CacheKeys } from '../redis/cache-keys';
import { applyAll, parseAffinityState, DEFAULT_AFFINITY_SETTINGS, type AffinityEvent, type AffinitySettings, type AffinityState } from './affinity';

/** An idle conversation forgets its affinity after a day. */
export const AFFINITY_IDLE_TTL_MS = 24 * 60 * 60 * 1000;

export function createAffinityStore(redis: Redis, settings: AffinitySettings = DEFAULT_AFFINITY_SETTINGS, idleTtlMs = AFFINITY_IDLE_TTL_MS) {
  return {
    async get(conversationId: string): Promise<AffinityState> {
      return parseAffinityState(await redis.get(CacheKeys.conversationAffinity(conversationId)));
    },

    /** Applies the events of one successful call (failures before it, then its success); the new state. */
    async apply(conversationId: string, events: readonly AffinityEvent[]): Promise<AffinityState> {
      const key = CacheKeys.conversationAffinity(conversationId);
      const next = applyAll(parseAffinityState(await redis.get(key)), events, settings);
      await redis.set(key, JSON.stringify(next), 'PX', idleTtlMs);
      return next;
    },
  };
}

export type AffinityStore = ReturnType<typeof createAffinityStore>;
