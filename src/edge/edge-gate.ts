/**
 * Admission at the edge: what the API decides before any workflow starts, in one
 * Redis round trip (edge_admit.lua). A tenant short of quota, a key short of budget,
 * a rate limit or a parallel cap reached is refused at once (about a millisecond),
 * so a tenant out of money, or a client retrying 429s in a loop, costs no Temporal
 * work and slows nobody else down. The edge only filters: what passes still
 * reserves atomically in QuotaCheckStep (the edge may read a counter a moment old).
 *
 * - A counter that is not cached is warmed from PostgreSQL (the same warm-up the
 *   workflow would do) and asked again: the only database read on this path.
 * - Redis unreachable: the edge lets the request through (fail open); the workflow
 *   admits through the PostgreSQL fallback, and rate limits are not enforced meanwhile.
 * - The process's in-flight bound (InflightBound) sheds overload with a 503.
 * - A refused request with an Idempotency-Key whose id the ledger already knows is let through
 *   untouched, as the script's 'duplicate' is: a retry of a request admitted through the
 *   PostgreSQL fallback (Redis had no record of it) gets its first outcome, never a 429 for a
 *   request that was billed. Only refusals of such requests pay that one indexed read.
 * A passed request holds in-flight leases, renewed while its response runs and given
 * back (with its tokens-per-minute share settled to the real count) when it ends.
 */
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import { EdgeStatus, type EdgeDecision, type EdgeScripts } from '../redis/edge-scripts';
import type { QuotaWarmup } from '../redis/quota-warmup';
import { AdmissionDeniedError } from '../services/request-errors';
import { isIdempotentRequestId } from '../services/billed-requests';
import type { InflightBound } from './inflight-bound';
import { worstCaseCompletionTokens } from '../workflows/definitions';
import type { RequestLimits } from './limits';

/** Thrown when a rate limit or a parallel-request cap refuses a request at the edge. */
export class RateLimitedError extends Error {
  override name = 'RateLimitedError';
  constructor(
    readonly kind: 'requests' | 'tokens' | 'parallel_requests',
    readonly retryAfterMs: number,
    readonly limit: number | null,
  ) {
    super(`rate limit reached: ${kind}`);
  }
}

/** Thrown when this API process is at its in-flight bound: retry shortly (or elsewhere). */
export class OverloadedError extends Error {
  override name = 'OverloadedError';
  constructor() {
    super('This gateway instance is at capacity; retry shortly.');
  }
}

/** The request the edge looks at. */
export interface EdgeRequestInput {
  tenantId: string;
  apiKeyId: string;
  requestId: string;
  reservedMicros: number;
  promptTokens: number;
  maxOutputTokens: number;
  /** `n` (issue 11): tokens per minute take every choice at the cap. @default 1 */
  choices?: number;
}

/** A request the edge let through: leave() once its response has ended. */
export interface EdgePass {
  /** The limit states for the x-ratelimit-* headers; null when Redis could not be asked. */
  decision: EdgeDecision | null;
  /** Gives the leases and the in-flight slot back; `realTokens` settles the TPM share (undefined = keep the estimate). */
  leave(realTokens?: number): void;
}

export interface EdgeGateDeps {
  scripts: Pick<EdgeScripts, 'admit' | 'renewLeases' | 'release'>;
  warmup: Pick<QuotaWarmup, 'warmTenant' | 'warmKey'>;
  inflight: InflightBound;
  metrics: Pick<BillingMetrics, 'edgeRefusals'>;
  log: Pick<Logger, 'warn'>;
  /** How long an in-flight lease lives unless renewed. */
  leaseMs: number;
  /** Whether the ledger has a row for this request id (asked only for a refused idempotent request). */
  ledgerKnows?: (requestId: string) => Promise<boolean>;
}

const REFUSALS: Partial<Record<EdgeStatus, (d: EdgeDecision, limits: RequestLimits) => Error>> = {
  [EdgeStatus.insufficientQuota]: () => new AdmissionDeniedError('insufficient_quota'),
  [EdgeStatus.budgetExceeded]: () => new AdmissionDeniedError('budget_exceeded'),
  [EdgeStatus.rateLimitRequests]: (d) => new RateLimitedError('requests', d.retryAfterMs, d.requests?.limit ?? null),
  [EdgeStatus.rateLimitTokens]: (d) => new RateLimitedError('tokens', d.retryAfterMs, d.tokens?.limit ?? null),
  [EdgeStatus.parallelRequests]: (_d, l) => new RateLimitedError('parallel_requests', 1000, l.key.maxParallel ?? l.tenant.maxParallel),
};

export function createEdgeGate(deps: EdgeGateDeps) {
  /** The script's decision, warming a counter that is not cached (at most the tenant, then the key). */
  async function decide(input: EdgeRequestInput, limits: RequestLimits): Promise<EdgeDecision> {
    const request = { ...input, estimateMicros: input.reservedMicros, estimateTokens: input.promptTokens + worstCaseCompletionTokens(input), limits };
    for (let attempt = 0; ; attempt++) {
      const decision = await deps.scripts.admit(request, deps.leaseMs);
      const missing = decision.status === EdgeStatus.tenantMissing || decision.status === EdgeStatus.keyMissing;
      if (!missing || attempt >= 2) return decision;
      const found = decision.status === EdgeStatus.tenantMissing
        ? await deps.warmup.warmTenant(input.tenantId)
        : await deps.warmup.warmKey(input.tenantId, input.apiKeyId);
      if (!found) return decision; // not in PostgreSQL either: the workflow denies it
    }
  }

  /** A retry of a request the ledger has (its workflow answers with the first outcome); false when it cannot tell. */
  async function alreadyAdmitted(requestId: string): Promise<boolean> {
    if (!deps.ledgerKnows || !isIdempotentRequestId(requestId)) return false;
    return deps.ledgerKnows(requestId).catch(() => false);
  }

  return {
    /**
     * Lets the request through or throws why not (AdmissionDeniedError, RateLimitedError,
     * OverloadedError). `onDecision` sees the limit states first, refused or not, so every
     * answer of a limited key can carry them.
     */
    async enter(input: EdgeRequestInput, limits: RequestLimits, onDecision: (d: EdgeDecision) => void): Promise<EdgePass> {
      if (!deps.inflight.tryAcquire()) throw new OverloadedError();
      let decision: EdgeDecision | null = null;
      try {
        decision = await decide(input, limits);
      } catch (err) {
        deps.log.warn({ requestId: input.requestId, err: (err as Error).message }, 'edge admission unavailable: letting the workflow decide');
      }
      if (decision) onDecision(decision);
      const refuse = decision ? REFUSALS[decision.status] : undefined;
      if (decision && refuse && !(await alreadyAdmitted(input.requestId))) {
        deps.inflight.release();
        deps.metrics.edgeRefusals.inc({ reason: decision.status });
        throw refuse(decision, limits);
      }
      // Only an admitted decision took leases and units; a duplicate, a known retry or a cold, unknown counter took nothing.
      const holdsLeases = decision?.status === EdgeStatus.admitted;
      const renew = holdsLeases
        ? setInterval(() => {
            deps.scripts.renewLeases(input.tenantId, input.apiKeyId, input.requestId, deps.leaseMs).catch(() => undefined);
          }, Math.max(100, Math.floor(deps.leaseMs / 3)))
        : undefined;
      let left = false;
      return {
        decision,
        leave(realTokens?: number): void {
          if (left) return;
          left = true;
          clearInterval(renew);
          deps.inflight.release();
          if (!holdsLeases) return;
          const estimateTokens = input.promptTokens + worstCaseCompletionTokens(input);
          deps.scripts
            .release({ tenantId: input.tenantId, apiKeyId: input.apiKeyId, requestId: input.requestId, estimateTokens, limits }, realTokens ?? estimateTokens)
            .catch((err: unknown) => deps.log.warn({ requestId: input.requestId, err: (err as Error).message }, 'edge release failed: leases expire on their own'));
        },
      };
    },
  };
}

export type EdgeGate = ReturnType<typeof createEdgeGate>;
