/**
 * RoutingStep: chooses the upstream channel for a request. One channel per model
 * today; routing affinity (M8: a conversation bound to a channel, updated only
 * after a successful call) plugs in here.
 */
import type { BilledRequestInput } from '../workflows/definitions';

export interface RoutingDeps {
  /** Channel names by model; `*` is the default. */
  channels: Readonly<Record<string, string>>;
}

/** Thrown when no channel serves the model. */
export class NoChannelError extends Error {
  override name = 'NoChannelError';
}

export function createRoutingStep(deps: RoutingDeps) {
  return function routingStep(input: BilledRequestInput): Promise<string> {
    const channel = deps.channels[input.model] ?? deps.channels['*'];
    if (!channel) return Promise.reject(new NoChannelError(`no upstream channel serves model ${input.model}`));
    return Promise.resolve(channel);
  };
}
