/**
 * Channel health, shared by every worker through Redis: a channel that fails before its
 * first byte `threshold` times within `windowMs` is cooled down for `cooldownMs`, and the
 * router skips it meanwhile (unless every channel of the model is cooling: then a cooled
 * channel is still better than no answer). Shared, not per worker, so one worker's evidence
 * spares the others the same failed first attempts.
 *
 * The window is fixed (it starts at the first failure): two round trips per failure at most,
 * no Lua; a burst that straddles two windows may need up to 2 x threshold - 1 failures.
 */
import type { Redis } from '../redis/client';
import { CacheKeys } from '../redis/cache-keys';

export interface ChannelHealthSettings {
  /** @default 3 */
  threshold: number;
  /** @default 30000 */
  windowMs: number;
  /** @default 30000 */
  cooldownMs: number;
}

export const DEFAULT_CHANNEL_HEALTH: ChannelHealthSettings = { threshold: 3, windowMs: 30_000, cooldownMs: 30_000 };

export function createChannelHealth(redis: Redis, settings: ChannelHealthSettings = DEFAULT_CHANNEL_HEALTH) {
  return {
    /** Counts a failure; true when this failure started the channel's cool-down. */
    async recordFailure(channelId: string): Promise<boolean> {
      const key = CacheKeys.channelFailures(channelId);
      // SET NX starts the window with its TTL; INCR keeps that TTL.
      const replies = await redis.multi().set(key, '0', 'PX', settings.windowMs, 'NX').incr(key).exec();
      const count = Number(replies?.[1]?.[1] ?? 0);
      if (count < settings.threshold) return false;
      await redis.multi().set(CacheKeys.channelCooldown(channelId), '1', 'PX', settings.cooldownMs).del(key).exec();
      return true;
    },

    /** The channels among `channelIds` that are cooling down now. */
    async cooling(channelIds: readonly string[]): Promise<Set<string>> {
      if (channelIds.length === 0) return new Set();
      const flags = await redis.mget(...channelIds.map((id) => CacheKeys.channelCooldown(id)));
      return new Set(channelIds.filter((_, i) => flags[i] !== null));
    },

    /** Ends a cool-down and forgets the failures (tests, ops). */
    async reset(channelId: string): Promise<void> {
      await redis.del(CacheKeys.channelFailures(channelId), CacheKeys.channelCooldown(channelId));
    },
  };
}

export type ChannelHealth = ReturnType<typeof createChannelHealth>;
