/**
 * ChannelRouter: RoutingStep's choice of upstream channels and UpstreamCallStep's
 * providers for them (issue 10, M8).
 *
 * route(): among the enabled channels that serve the model (`models` holds it or `*`) and
 * are not cooling down (./channel-health.ts), the conversation's affinity first (when it
 * names one of them), then a weighted random order of the rest; at most `maxCandidates`.
 * When no configured channel serves the model the built-in default channel does (the
 * configured UPSTREAM_BASE_URL; `npm start` without channels keeps the mock), unless a
 * channel named `default` was configured: it replaces the built-in one.
 *
 * The channel list is cached for `cacheMs` (an admin change takes effect within it), so a
 * route costs one MGET (health) plus one GET (affinity) when the request has a conversation.
 * Both live in Redis: while it is down a route knows no cool-down and no affinity and goes on
 * by weight (admission goes on through PostgreSQL then; refusing to route would fail it anyway).
 * Providers are cached by base URL and key, so a channel keeps its HTTP connections.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { ChannelRepository, RoutableChannel } from './channel-repository';
import type { ChannelHealth } from './channel-health';
import type { AffinityStore } from '../routing/affinity-store';
import { preferredChannel, type AffinityEvent } from '../routing/affinity';
import { weightedOrder } from '../routing/weighted-choice';
import { createOpenAICompatibleProvider } from '../upstream/openai-compatible';
import type { UpstreamProvider } from '../upstream/provider';
import type { RouteDecision } from '../workflows/definitions';

/** The built-in channel: the configured upstream. */
export const DEFAULT_CHANNEL_ID = 'default';

/** Thrown when no channel serves the model (RoutingStep fails; the reservation is voided). */
export class NoChannelError extends Error {
  override name = 'NoChannelError';
}

export interface ChannelRouterDeps {
  channels: Pick<ChannelRepository, 'listRoutable'>;
  health: Pick<ChannelHealth, 'cooling' | 'recordFailure'>;
  affinity: Pick<AffinityStore, 'get' | 'apply'>;
  /** The built-in default channel's provider (UPSTREAM_BASE_URL). */
  defaultProvider: UpstreamProvider;
  /** Failures and cool-downs per channel; without it nothing is counted. */
  metrics?: Pick<BillingMetrics, 'channelFailures' | 'channelCooldowns'>;
  /** Where a route that could not read cool-downs or affinity (Redis down) says so. */
  log?: Pick<Logger, 'warn'>;
  /** @default Math.random */
  random?: () => number;
  /** @default Date.now */
  now?: () => number;
  /** How long the channel list is cached. @default 1000 */
  cacheMs?: number;
  /** The channel plus fallbacks a route names at most. @default 3 */
  maxCandidates?: number;
  /** Builds a channel's provider (tests may count them). */
  providerOf?: (channel: RoutableChannel) => UpstreamProvider;
}

function serves(channel: RoutableChannel, model: string): boolean {
  return channel.enabled && (channel.models.includes(model) || channel.models.includes('*'));
}

export function createChannelRouter(deps: ChannelRouterDeps) {
  const random = deps.random ?? Math.random;
  const now = deps.now ?? Date.now;
  const cacheMs = deps.cacheMs ?? 1000;
  const maxCandidates = deps.maxCandidates ?? 3;
  const build = deps.providerOf ?? ((c: RoutableChannel) => createOpenAICompatibleProvider({ baseUrl: c.baseUrl, ...(c.apiKey ? { apiKey: c.apiKey } : {}) }));
  let cached: { at: number; channels: Promise<RoutableChannel[]> } | undefined;
  const providers = new Map<string, UpstreamProvider>();

  function channels(fresh = false): Promise<RoutableChannel[]> {
    const t = now();
    if (fresh || !cached || t - cached.at >= cacheMs) {
      const loading = deps.channels.listRoutable();
      cached = { at: t, channels: loading };
      // A failed load is not cached: the next route reads again.
      loading.catch(() => { if (cached?.channels === loading) cached = undefined; });
    }
    return cached.channels;
  }

  function providerKey(c: RoutableChannel): string {
    // The key itself never becomes a map key (heap snapshots, debug dumps): its hash does.
    return `${c.baseUrl}\n${c.apiKey ? createHash('sha256').update(c.apiKey).digest('hex') : ''}`;
  }

  return {
    async route(req: { model: string; conversationId?: string }): Promise<RouteDecision> {
      const all = await channels();
      const serving = all.filter((c) => serves(c, req.model));
      if (serving.length === 0) {
        if (all.some((c) => c.id === DEFAULT_CHANNEL_ID)) throw new NoChannelError(`no upstream channel serves model ${req.model}`);
        return { channel: DEFAULT_CHANNEL_ID, fallbacks: [], affinity: false };
      }
      const unknown = <T,>(what: string, fallback: T) => (err: unknown): T => {
        deps.log?.warn({ model: req.model, err: (err as Error).message }, `routing without channel ${what}: Redis unavailable`);
        return fallback;
      };
      const [cooling, state] = await Promise.all([
        deps.health.cooling(serving.map((c) => c.id)).catch(unknown('cool-downs', new Set<string>())),
        req.conversationId ? deps.affinity.get(req.conversationId).catch(unknown('affinity', undefined)) : undefined,
      ]);
      const healthy = serving.filter((c) => !cooling.has(c.id));
      // Every channel cooling: trying one is better than refusing the request.
      const pool = healthy.length > 0 ? healthy : serving;
      const preferred = state ? preferredChannel(state, now()) : undefined;
      const first = preferred !== undefined ? pool.find((c) => c.id === preferred) : undefined;
      const order = first ? [first, ...weightedOrder(pool.filter((c) => c !== first), random)] : weightedOrder(pool, random);
      const ids = order.slice(0, maxCandidates).map((c) => c.id);
      return { channel: ids[0]!, fallbacks: ids.slice(1), affinity: first !== undefined };
    },

    /** The provider of a channel, enabled or not (a recorded decision is honoured); undefined when it does not exist. */
    async providerFor(channelId: string): Promise<UpstreamProvider | undefined> {
      let channel = (await channels()).find((c) => c.id === channelId);
      channel ??= (await channels(true)).find((c) => c.id === channelId);
      if (!channel) return channelId === DEFAULT_CHANNEL_ID ? deps.defaultProvider : undefined;
      const key = providerKey(channel);
      let provider = providers.get(key);
      if (!provider) {
        provider = build(channel);
        providers.set(key, provider);
      }
      return provider;
    },

    /** A channel failed before its first byte (counts towards its cool-down). */
    async reportFailure(channelId: string): Promise<void> {
      deps.metrics?.channelFailures.inc({ channel: channelId });
      if (await deps.health.recordFailure(channelId)) deps.metrics?.channelCooldowns.inc({ channel: channelId });
    },

    /** M8.3: after a successful call, the conversation's affinity learns which channels failed before it and which served. */
    async recordSuccess(conversationId: string, failed: readonly string[], served: string): Promise<void> {
      const at = now();
      const events: AffinityEvent[] = [...failed.map((channel) => ({ type: 'failure' as const, channel, at })), { type: 'success', channel: served, at }];
      await deps.affinity.apply(conversationId, events);
    },
  };
}

export type ChannelRouter = ReturnType<typeof createChannelRouter>;
