/**
 * Where a billed request's workflow spends its time, from sampled Temporal histories: the
 * workflow total, workflow tasks waiting in the task queue and running in the worker (the local
 * activities admission, routing and settlement run inside them), and the upstream activity's
 * queue wait and run. When these hold most of the API's latency, the time is in orchestration,
 * not in Redis or PostgreSQL. Workflows are found by the `TenantId` search attribute and
 * assigned to a phase by their start time.
 */
import { Client, Connection } from '@temporalio/client';
import { tsToMs } from '@temporalio/common';
import { summarise, type LatencySummary } from './statistics';

/** One window of wall-clock time (Date.now()) in which a gateway phase started its workflows. */
export interface PhaseWindow { phase: string; fromMs: number; toMs: number }

/** Per-workflow sums of where a billed request's workflow spent its time, from sampled histories. */
export interface HistoryBreakdown {
  phase: string;
  sampled: number;
  /** Workflow started -> completed. */
  workflow: LatencySummary;
  /** Workflow tasks waiting in the task queue for a worker slot/poller (scheduled -> started), summed per workflow. */
  workflowTaskQueue: LatencySummary;
  /** Workflow tasks running in the worker (started -> completed; includes the local activities admission, routing, settlement). */
  workflowTaskRun: LatencySummary;
  /** The upstream activity waiting in the task queue (scheduled -> started). */
  activityQueue: LatencySummary;
  /** The upstream activity running (started -> completed). */
  activityRun: LatencySummary;
  workflowTasksPerRequest: number;
}

const eventNumber = (v: unknown): number => (typeof v === 'number' ? v : Number(String(v)));

/** Samples up to `perPhase` workflows of each phase and sums their history's spans. */
export async function temporalBreakdown(address: string, namespace: string, tenantId: string, windows: PhaseWindow[], perPhase = 30): Promise<HistoryBreakdown[]> {
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection, namespace });
    const runs: Array<{ workflowId: string; runId: string; startMs: number }> = [];
    for await (const wf of client.workflow.list({ query: `TenantId = '${tenantId}'` })) runs.push({ workflowId: wf.workflowId, runId: wf.runId, startMs: wf.startTime.getTime() });
    const breakdowns: HistoryBreakdown[] = [];
    for (const window of windows) {
      const inWindow = runs.filter((r) => r.startMs >= window.fromMs && r.startMs <= window.toMs);
      const step = Math.max(1, Math.floor(inWindow.length / perPhase));
      const sample = inWindow.filter((_, i) => i % step === 0).slice(0, perPhase);
      const spans = { workflow: [] as number[], wftQueue: [] as number[], wftRun: [] as number[], actQueue: [] as number[], actRun: [] as number[] };
      let workflowTasks = 0;
      for (const run of sample) {
        const events = (await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory()).events ?? [];
        const at = new Map<number, number>();
        const sums = { wftQueue: 0, wftRun: 0, actQueue: 0, actRun: 0 };
        for (const e of events) {
          const t = tsToMs(e.eventTime);
          at.set(eventNumber(e.eventId), t);
          const since = (id: unknown): number => t - (at.get(eventNumber(id)) ?? t);
          if (e.workflowTaskStartedEventAttributes) sums.wftQueue += since(e.workflowTaskStartedEventAttributes.scheduledEventId);
          if (e.workflowTaskCompletedEventAttributes) {
            sums.wftRun += since(e.workflowTaskCompletedEventAttributes.startedEventId);
            workflowTasks += 1;
          }
          if (e.activityTaskStartedEventAttributes) sums.actQueue += since(e.activityTaskStartedEventAttributes.scheduledEventId);
          if (e.activityTaskCompletedEventAttributes) sums.actRun += since(e.activityTaskCompletedEventAttributes.startedEventId);
        }
        const first = events[0];
        const last = events.at(-1);
        if (first && last) spans.workflow.push(tsToMs(last.eventTime) - tsToMs(first.eventTime));
        spans.wftQueue.push(sums.wftQueue);
        spans.wftRun.push(sums.wftRun);
        spans.actQueue.push(sums.actQueue);
        spans.actRun.push(sums.actRun);
      }
      breakdowns.push({
        phase: window.phase,
        sampled: sample.length,
        workflow: summarise(spans.workflow),
        workflowTaskQueue: summarise(spans.wftQueue),
        workflowTaskRun: summarise(spans.wftRun),
        activityQueue: summarise(spans.actQueue),
        activityRun: summarise(spans.actRun),
        workflowTasksPerRequest: sample.length > 0 ? workflowTasks / sample.length : NaN,
      });
    }
    return breakdowns;
  } finally {
    await connection.close();
  }
}
