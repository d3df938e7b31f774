/**
 * The sweeper as a Temporal activity, for the scheduled workflow that runs it every few
 * minutes: it heartbeats its progress after each row (a worker that dies mid-run is
 * noticed within the heartbeat timeout, and the retry simply sweeps again: what the first
 * attempt settled is no longer pending) and stops between rows when cancelled.
 * Give it a heartbeat timeout and a start-to-close timeout that fits SWEEP_MAX_PER_RUN rows.
 */
import { Context } from '@temporalio/activity';
import type { ReservationSweeper, SweepSummary } from './reservation-sweeper';

export function createSweeperActivities(sweeper: ReservationSweeper) {
  return {
    async sweepPendingReservations(): Promise<SweepSummary> {
      const ctx = Context.current();
      return sweeper.sweep({ onProgress: (summary) => ctx.heartbeat({ ...summary }), signal: ctx.cancellationSignal });
    },
  };
}
