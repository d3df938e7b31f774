/**
 * Drains the dispatch outbox once (M5): sends the follow-up tasks a crash or an outage
 * left undispatched. Meant to run on a Temporal Schedule every 30-60 s with overlap SKIP;
 * each run is short and idempotent (a task sent twice starts one workflow).
 */
import { proxyActivities } from '@temporalio/workflow';
import type { createDispatchActivities } from '../dispatch/activities';

const { drainOutbox } = proxyActivities<ReturnType<typeof createDispatchActivities>>({
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 3 },
});

export async function drainDispatchOutbox(): Promise<Awaited<ReturnType<typeof drainOutbox>>> {
  return drainOutbox();
}
