/**
 * Starts a maintenance job now, outside its Schedule: `POST /admin/sync/:job` and the
 * sync that follows a top-up (M4.5). The run gets its own workflow id (the Schedule's id,
 * then `manual-` and a random suffix), so it shows beside the scheduled runs in the Web UI
 * and the caller can follow it. A manual run may overlap a scheduled one: the jobs are safe
 * to overlap (a sync never writes an older figure over a newer one).
 */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { SyncScope } from '../sync/counter-sync';
import { MAINTENANCE_JOBS, type MaintenanceJob } from '../workflows/maintenance-jobs';

export interface StartedJob {
  job: MaintenanceJob;
  workflowId: string;
  runId: string;
}

export function createMaintenanceClient(client: Client, taskQueue: string) {
  return {
    async start(job: MaintenanceJob, opts: { scope?: SyncScope; reason?: string } = {}): Promise<StartedJob> {
      const { scheduleId, workflowType } = MAINTENANCE_JOBS[job];
      const workflowId = `${scheduleId}-${opts.reason ?? 'manual'}-${randomUUID()}`;
      const handle = await client.workflow.start(workflowType, { workflowId, taskQueue, args: opts.scope ? [opts.scope] : [] });
      return { job, workflowId, runId: handle.firstExecutionRunId };
    },
  };
}

export type MaintenanceClient = ReturnType<typeof createMaintenanceClient>;
