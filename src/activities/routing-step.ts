/**
 * RoutingStep: chooses the upstream channels of a request (issue 10, M8). With a
 * ChannelRouter (the worker's), the conversation's affinity first, then a weighted choice
 * among the healthy channels that serve the model, plus fallbacks for a failure before the
 * first byte (src/channels/channel-router.ts). Its result is recorded in history, so a
 * retried UpstreamCallStep starts on the same channel. Without a router (narrow tests), the
 * static `channels` map by model (`*` the default) names one channel.
 */
import type { BilledRequestInput, RouteDecision } from '../workflows/definitions';
import { NoChannelError, type ChannelRouter } from '../channels/channel-router';

export { NoChannelError };

export interface RoutingDeps {
  /** Channel names by model; `*` is the default. Used when there is no `router`. */
  channels: Readonly<Record<string, string>>;
  router?: Pick<ChannelRouter, 'route'>;
}

export function createRoutingStep(deps: RoutingDeps) {
  return function routingStep(input: BilledRequestInput): Promise<string | RouteDecision> {
    if (deps.router) return deps.router.route({ model: input.model, ...(input.conversationId ? { conversationId: input.conversationId } : {}) });
    const channel = deps.channels[input.model] ?? deps.channels['*'];
    if (!channel) return Promise.reject(new NoChannelError(`no upstream channel serves model ${input.model}`));
    return Promise.resolve(channel);
  };
}
