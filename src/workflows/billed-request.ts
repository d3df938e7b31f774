/**
 * One durable workflow per billed request (the roadmap's steps as activities):
 * QuotaCheckStep -> RoutingStep -> UpstreamCallStep (+ StreamTokenAccumulator)
 * -> BillingStep. Every step is idempotent per request id, so retries, crashes
 * and replays bill exactly once.
 */
import {
  ActivityFailure,
  allHandlersFinished,
  condition,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  upsertSearchAttributes,
  log,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { SearchKeys } from './search-attributes';
import {
  admissionUpdate,
  upstreamOutputUpdate,
  RequestStatus,
  type AdmissionDecision,
  type BilledRequestInput,
  type BilledRequestResult,
  type UpstreamOutcome,
} from './definitions';

type Activities = ReturnType<typeof createActivities>;

/** Admission, routing and settlement are short and idempotent: local activities save server round trips. */
const steps = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '100 ms', backoffCoefficient: 2, maximumInterval: '10 seconds' },
});

/** Settlement must eventually succeed (money may not be lost): it retries without limit. */
const billing = proxyLocalActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '200 ms', backoffCoefficient: 2, maximumInterval: '15 seconds' },
});

/** The upstream call heartbeats; a crashed worker's attempt is retried, and the retry never calls upstream again once output reached the client. */
const upstream = proxyActivities<Activities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '6 seconds',
  retry: {
    initialInterval: '200 ms',
    backoffCoefficient: 2,
    maximumInterval: '5 seconds',
    maximumAttempts: 6,
    nonRetryableErrorTypes: ['UpstreamRejectedError'],
  },
});

function setStatus(status: RequestStatus): void {
  upsertSearchAttributes([{ key: SearchKeys.requestStatus, value: status }]);
}

export async function billedRequest(input: BilledRequestInput): Promise<BilledRequestResult> {
  // Read by the update handlers, which may run before the steps have produced anything.
  const state: { admission?: AdmissionDecision; outcome?: UpstreamOutcome; upstreamDone: boolean } = { upstreamDone: false };
  setHandler(admissionUpdate, async () => {
    await condition(() => state.admission !== undefined);
    return state.admission!;
  });
  setHandler(upstreamOutputUpdate, async () => {
    await condition(() => state.upstreamDone || state.admission?.admitted === false);
    return state.outcome ?? null;
  });

  const admission = await steps.quotaCheckStep(input);
  state.admission = admission;
  if (!admission.admitted) {
    setStatus(RequestStatus.denied);
    await condition(allHandlersFinished);
    return { requestId: input.requestId, status: RequestStatus.denied, admission };
  }
  setStatus(RequestStatus.streaming);

  const channel = await steps.routingStep(input);
  let outcome: UpstreamOutcome | undefined;
  try {
    outcome = await upstream.upstreamCallStep(input, channel);
  } catch (err) {
    // Every attempt failed: settlement reads the relay to learn whether any output was delivered.
    log.warn('upstream call failed', { requestId: input.requestId, error: err instanceof ActivityFailure ? err.cause?.message : String(err) });
  }
  state.outcome = outcome;
  state.upstreamDone = true;

  const settlement = await billing.billingStep(input, admission.path, outcome ?? null);
  setStatus(settlement.status === 'voided' ? RequestStatus.voided : RequestStatus.settled);
  await condition(allHandlersFinished);
  return {
    requestId: input.requestId,
    status: settlement.status === 'voided' ? RequestStatus.voided : RequestStatus.settled,
    admission,
    upstream: outcome,
    settlement,
  };
}
