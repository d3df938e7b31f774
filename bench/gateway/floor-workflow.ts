/**
 * The Temporal floor of the gateway benchmark: the billed-request workflow's exact Temporal shape
 * (src/workflows/billed-request.ts) with every step a no-op. Update-with-start, the admission
 * update answered after a local "admission" activity, a local "routing" activity, one regular
 * activity with the upstream call's options, a local "settlement", the same search-attribute
 * upserts, then return. What the gateway costs above this is what the project adds.
 *
 * Workflow code: deterministic, bundled by the worker; no Node built-ins. Only type imports and
 * sandbox-safe definitions come from src/.
 */
import { allHandlersFinished, condition, defineUpdate, proxyActivities, proxyLocalActivities, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type { AdmissionDecision, AdmissionReply, BilledRequestInput, SettlementResult, UpstreamOutcome } from '../../src/workflows/definitions';
import { SearchKeys } from '../../src/workflows/search-attributes';
import type { FloorActivities } from './floor-activities';

/** The floor's admission update (the product's is `admissionUpdate`, update id `admission`). */
export const floorAdmissionUpdate = defineUpdate<AdmissionReply>('floorAdmission');

/** The same options as the product's local steps. */
const steps = proxyLocalActivities<FloorActivities>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '100 ms', backoffCoefficient: 2, maximumInterval: '1 second', maximumAttempts: 3 },
});

/** The same options as the product's upstream call (a regular activity with a heartbeat timeout), with the tenant as fairness key. */
const upstreamFor = (tenantId: string): FloorActivities => proxyActivities<FloorActivities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '6 seconds',
  retry: { initialInterval: '200 ms', backoffCoefficient: 2, maximumInterval: '5 seconds', maximumAttempts: 6 },
  priority: { fairnessKey: tenantId },
});

export interface FloorResult { requestId: string; admission: AdmissionDecision; upstream: UpstreamOutcome; settlement: SettlementResult }

export async function floorRequest(input: BilledRequestInput): Promise<FloorResult> {
  const upstream = upstreamFor(input.tenantId);
  const state: { admission?: AdmissionDecision } = {};
  setHandler(floorAdmissionUpdate, async () => {
    await condition(() => state.admission !== undefined);
    return { ...state.admission!, requestHash: input.requestHash };
  });
  const admission = await steps.floorAdmission(input);
  state.admission = admission;
  upsertSearchAttributes([{ key: SearchKeys.requestStatus, value: 'streaming' }]);
  const channel = await steps.floorRouting(input);
  const outcome = await upstream.floorUpstream(input, channel);
  const settlement = await steps.floorSettlement(input, outcome);
  upsertSearchAttributes([{ key: SearchKeys.requestStatus, value: 'settled' }]);
  await condition(allHandlersFinished);
  return { requestId: input.requestId, admission, upstream: outcome, settlement };
}
