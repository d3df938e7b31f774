/**
 * Rate limits of a tenant or an API key (requests and tokens per minute, requests in
 * flight), enforced at the edge before any workflow starts. `null` = unlimited. A key
 * is bound by its own limits and by its tenant's.
 */

export interface RateLimits {
  rpm: number | null;
  tpm: number | null;
  maxParallel: number | null;
}

/** The limits a request is checked against. */
export interface RequestLimits {
  tenant: RateLimits;
  key: RateLimits;
}

export const UNLIMITED: Readonly<RateLimits> = Object.freeze({ rpm: null, tpm: null, maxParallel: null });

/** Largest accepted values: beyond them a limit means nothing and would overflow the counters' arithmetic. */
export const MAX_LIMIT = { rpm: 100_000_000, tpm: 1_000_000_000_000, maxParallel: 1_000_000 } as const;

/** True when any of the limits is set: only then does a response carry x-ratelimit-* headers. */
export function isLimited(limits: RequestLimits): boolean {
  return [limits.tenant, limits.key].some((l) => l.rpm !== null || l.tpm !== null || l.maxParallel !== null);
}
