/**
 * The dispatcher's activity: drainOutbox, which the scheduled maintenance job `outbox`
 * (outboxDrainWorkflow in src/workflows/maintenance.ts) runs. It heartbeats after each
 * batch, so a drain that outlives its worker is retried elsewhere.
 */
import { Context } from '@temporalio/activity';
import type { Dispatcher } from './dispatcher';

export interface DispatchActivityDeps {
  dispatcher: Pick<Dispatcher, 'drainOutbox'>;
}

export function createDispatchActivities(deps: DispatchActivityDeps) {
  return {
    /** Sends undispatched outbox rows older than DISPATCH_DRAIN_MIN_AGE_SECONDS, in batches; returns what it did. */
    async drainOutbox() {
      return deps.dispatcher.drainOutbox({ onBatch: (report) => Context.current().heartbeat(report) });
    },
  };
}
