/**
 * The floor workflow's steps, all no-ops that return values of the product's shapes (so payloads
 * and history events are about the same size). The one thing the regular activity does is tell
 * the in-process client that its request is done: in the gateway the client's HTTP response ends
 * when the upstream activity's output has reached the API through Redis, before settlement; here
 * the same moment is a promise resolved in memory, so both closed loops stop the clock at the
 * same point of the workflow and settlement trails behind in both.
 */
import type { AdmissionDecision, BilledRequestInput, SettlementResult, UpstreamOutcome } from '../../src/workflows/definitions';

/** Requests whose regular activity has not run yet: request id -> resolve. Filled by the client loop. */
export const upstreamDone = new Map<string, () => void>();
/** Settlements run, for the drain after a phase. */
export const counters = { settled: 0 };

export function createFloorActivities() {
  return {
    floorAdmission(input: BilledRequestInput): Promise<AdmissionDecision> {
      return Promise.resolve({ admitted: true, reservedMicros: input.reservedMicros, path: 'redis', duplicate: false });
    },
    floorRouting(_input: BilledRequestInput): Promise<string> {
      return Promise.resolve('default');
    },
    floorUpstream(input: BilledRequestInput, channel: string): Promise<UpstreamOutcome> {
      upstreamDone.get(input.requestId)?.();
      upstreamDone.delete(input.requestId);
      return Promise.resolve({ status: 'completed', promptTokens: input.promptTokens, completionTokens: 10, tokenSource: 'upstream', channel });
    },
    floorSettlement(input: BilledRequestInput, _outcome: UpstreamOutcome): Promise<SettlementResult> {
      counters.settled += 1;
      return Promise.resolve({ status: 'committed', costMicros: input.reservedMicros, deltaMicros: 0 });
    },
  };
}

export type FloorActivities = ReturnType<typeof createFloorActivities>;
