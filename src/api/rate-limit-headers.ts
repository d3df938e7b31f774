/**
 * OpenAI's rate-limit headers, on every answer to a key bound by a limit:
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}. The reset is a duration in
 * OpenAI's notation ("20ms", "1.5s", "6m0s"): how long until the limit is whole again.
 */
import type { Response } from 'express';
import type { EdgeDecision, LimitState } from '../redis/edge-scripts';

/** `ms` as OpenAI writes durations: "20ms" below a second, "1.5s" below a minute, else "6m0s". */
export function formatResetDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const seconds = Math.ceil(ms / 100) / 10;
  if (seconds < 60) return `${seconds}s`;
  const whole = Math.ceil(seconds);
  return `${Math.floor(whole / 60)}m${whole % 60}s`;
}

function write(res: Response, kind: 'requests' | 'tokens', state: LimitState | null): void {
  if (state === null) return;
  res.setHeader(`x-ratelimit-limit-${kind}`, String(state.limit));
  res.setHeader(`x-ratelimit-remaining-${kind}`, String(state.remaining));
  res.setHeader(`x-ratelimit-reset-${kind}`, formatResetDuration(state.resetMs));
}

/** Sets the headers of the limits the decision names (none for an unlimited key). */
export function writeRateLimitHeaders(res: Response, decision: EdgeDecision): void {
  if (res.headersSent) return;
  write(res, 'requests', decision.requests);
  write(res, 'tokens', decision.tokens);
}
