/**
 * One durable workflow per billed request (the lifecycle's steps as activities, docs/architecture.md):
 * QuotaCheckStep -> RoutingStep -> UpstreamCallStep (+ StreamTokenAccumulator)
 * -> BillingStep -> ConversationAppendStep (a request with X-Conversation-Id, committed).
 * Every step is idempotent per request id, so retries, crashes and replays bill exactly once.
 * What the steps and the update handlers share is a typed context (M9, ./billed-request-context.ts):
 * in memory only, rebuilt from the same step results on replay, so it adds no command to history.
 */
import {
  ActivityFailure,
  type ActivityOptions,
  ApplicationFailure,
  allHandlersFinished,
  condition,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  upsertSearchAttributes,
  log,
  patched,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { FailureType } from './failure-types';
import { SearchKeys } from './search-attributes';
import { BilledRequestFields as F, billedRequestContext } from './billed-request-context';
import {
  appendsToConversation,
  admissionUpdate,
  upstreamOutputUpdate,
  RequestStatus,
  type AdmissionDecision,
  type BilledRequestInput,
  type BilledRequestResult,
  type SettlementResult,
  type UpstreamOutcome,
} from './definitions';

type Activities = ReturnType<typeof createActivities>;

/**
 * Admission, routing and settlement are short and idempotent: local activities
 * save server round trips. Their retries are few and quick because a retrying
 * local activity holds the workflow task (and delays updates the API waits on).
 */
const steps = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '100 ms', backoffCoefficient: 2, maximumInterval: '1 second', maximumAttempts: 3 },
});

/**
 * Settlement must eventually succeed (money may not be lost). After the quick local
 * attempts it continues as a regular activity whose retries the server schedules,
 * without limit, e.g. until Redis is back from an outage.
 */
const DURABLE_BILLING_OPTIONS = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '10 seconds' },
} as const satisfies ActivityOptions;

/** The upstream call heartbeats; a crashed worker's attempt is retried, and the retry never calls upstream again once output reached the client. */
const UPSTREAM_OPTIONS = {
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '6 seconds',
  retry: {
    initialInterval: '200 ms',
    backoffCoefficient: 2,
    maximumInterval: '5 seconds',
    maximumAttempts: 6,
    nonRetryableErrorTypes: [FailureType.upstreamRejected],
  },
} as const satisfies ActivityOptions;

/**
 * ConversationAppendStep waits for the conversation lock (bounded, CONVERSATION_LOCK_WAIT_MS) and
 * writes one transaction: a regular activity, so a long wait never holds the workflow task. Each
 * attempt takes the lock anew (a larger fence); the request is billed already either way. The
 * lock lives in Redis, so the attempts outlast a Redis outage (about 13 minutes of them): an
 * exchange admitted while Redis was down is appended once it is back, not lost.
 */
const CONVERSATION_OPTIONS = {
  startToCloseTimeout: '1 minute',
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 30, nonRetryableErrorTypes: [FailureType.conversationRefused] },
} as const satisfies ActivityOptions;

/** The patch that added ConversationAppendStep: histories recorded before it replay without the step. */
const CONVERSATION_APPEND_PATCH = 'conversation-append-step';

/**
 * Task-queue fairness: the regular activities of a request are dispatched round-robin
 * over tenants while the queue is backlogged, like its workflow tasks (the client starts
 * the workflow with the same key, src/workflows/client.ts). Local activities run on the
 * worker that holds the workflow task and take no priority. Priority is not part of the
 * determinism check: histories recorded without it replay unchanged.
 */
function tenantActivities(tenantId: string): { upstream: Activities; durableBilling: Activities; conversation: Activities } {
  const priority = { fairnessKey: tenantId };
  return {
    upstream: proxyActivities<Activities>({ ...UPSTREAM_OPTIONS, priority }),
    durableBilling: proxyActivities<Activities>({ ...DURABLE_BILLING_OPTIONS, priority }),
    conversation: proxyActivities<Activities>({ ...CONVERSATION_OPTIONS, priority }),
  };
}

function setStatus(status: RequestStatus): void {
  upsertSearchAttributes([{ key: SearchKeys.requestStatus, value: status }]);
}

export async function billedRequest(input: BilledRequestInput): Promise<BilledRequestResult> {
  const { upstream, durableBilling, conversation } = tenantActivities(input.tenantId);
  // Read by the update handlers, which may run before the steps have produced anything.
  const ctx = billedRequestContext.create();
  ctx.set(F.upstreamDone, false);
  setHandler(admissionUpdate, async () => {
    await condition(() => ctx.has(F.admission));
    return { ...ctx.require(F.admission), requestHash: input.requestHash };
  });
  setHandler(upstreamOutputUpdate, async () => {
    await condition(() => ctx.get(F.upstreamDone) === true || ctx.get(F.admission)?.admitted === false);
    return ctx.get(F.outcome) ?? null;
  });

  let admission: AdmissionDecision;
  try {
    admission = await steps.quotaCheckStep(input);
  } catch (err) {
    // Neither Redis nor PostgreSQL could admit: the caller gets 503 and may retry with the same key.
    log.error('admission failed', { requestId: input.requestId, error: err instanceof ActivityFailure ? err.cause?.message : String(err) });
    admission = { admitted: false, reason: 'unavailable', path: 'postgres' };
  }
  ctx.set(F.admission, admission);
  if (!admission.admitted) {
    setStatus(admission.reason === 'unavailable' ? RequestStatus.failed : RequestStatus.denied);
    await condition(allHandlersFinished);
    // A failed run may be started again (reuse policy ALLOW_DUPLICATE_FAILED_ONLY): a retry can succeed.
    if (admission.reason === 'unavailable') throw ApplicationFailure.nonRetryable('admission unavailable', FailureType.admissionUnavailable);
    return { requestId: input.requestId, status: RequestStatus.denied, admission };
  }
  setStatus(RequestStatus.streaming);

  let outcome: UpstreamOutcome | undefined;
  try {
    const channel = await steps.routingStep(input);
    outcome = await upstream.upstreamCallStep(input, channel);
  } catch (err) {
    // No channel, or every upstream attempt failed: the reservation must still end (voided if nothing was delivered).
    // Settlement reads the relay to learn whether any output was delivered.
    log.warn('upstream call failed', { requestId: input.requestId, error: err instanceof ActivityFailure ? err.cause?.message : String(err) });
  }
  if (outcome) ctx.set(F.outcome, outcome);
  ctx.set(F.upstreamDone, true);

  let settlement: SettlementResult;
  try {
    settlement = await steps.billingStep(input, outcome ?? null);
  } catch {
    settlement = await durableBilling.billingStep(input, outcome ?? null);
  }
  ctx.set(F.settlement, settlement);
  setStatus(settlement.status === 'voided' ? RequestStatus.voided : RequestStatus.settled);

  // The exchange goes to its conversation only after a committed settlement; a failed append never
  // changes what was billed (the client has its answer already).
  // patched(): a history recorded before the step, or before relay mode 'result' appended (such a
  // run never reached this call), has no marker here and replays without the step.
  if (appendsToConversation(input, ctx.get(F.outcome), settlement) && patched(CONVERSATION_APPEND_PATCH)) {
    try {
      await conversation.conversationAppendStep(input);
    } catch (err) {
      log.error('conversation append failed', { requestId: input.requestId, conversationId: input.conversationId, error: err instanceof ActivityFailure ? err.cause?.message : String(err) });
    }
  }
  await condition(allHandlersFinished);
  return {
    requestId: input.requestId,
    status: settlement.status === 'voided' ? RequestStatus.voided : RequestStatus.settled,
    admission,
    upstream: outcome,
    settlement,
  };
}
