/**
 * The maintenance Schedules (M4), created or updated idempotently at worker start: every
 * worker runs this, and two workers started twice still leave exactly one Schedule per job.
 * A create that finds the Schedule (ScheduleAlreadyRunning) compares it with what this
 * worker wants and updates it only when the period, the workflow or the task queue changed
 * (so a period change in the settings reaches the server on the next start). A Schedule an
 * operator paused stays paused. Overlap is SKIP: a job still running when the next period
 * comes is not started twice (the jobs are safe to overlap, but a pile-up helps nobody).
 */
import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client, type ScheduleDescription } from '@temporalio/client';
import type { Logger } from '../log';
import { MAINTENANCE_JOBS, type MaintenanceJob } from '../workflows/maintenance-jobs';

export type MaintenancePeriods = Record<MaintenanceJob, number>;

export interface EnsureSchedulesOptions {
  taskQueue: string;
  /** Period of each job, in seconds (settings QUOTA_SYNC_INTERVAL_SECONDS, ...). */
  periodsSeconds: MaintenancePeriods;
  log: Pick<Logger, 'info'>;
}

export type ScheduleChange = 'created' | 'updated' | 'unchanged';

function wanted(job: MaintenanceJob, opts: EnsureSchedulesOptions) {
  const { scheduleId, workflowType } = MAINTENANCE_JOBS[job];
  return {
    spec: { intervals: [{ every: opts.periodsSeconds[job] * 1000 }] },
    // The run's workflow id is this id plus the start time (the server appends it).
    action: { type: 'startWorkflow' as const, workflowType, workflowId: scheduleId, taskQueue: opts.taskQueue, args: [] },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: 60_000 },
  };
}

function differs(prev: ScheduleDescription, job: MaintenanceJob, opts: EnsureSchedulesOptions): boolean {
  const interval = prev.spec.intervals?.[0];
  return (
    prev.spec.intervals?.length !== 1 ||
    interval?.every !== opts.periodsSeconds[job] * 1000 ||
    prev.action.type !== 'startWorkflow' ||
    prev.action.workflowType !== MAINTENANCE_JOBS[job].workflowType ||
    prev.action.taskQueue !== opts.taskQueue ||
    prev.policies.overlap !== ScheduleOverlapPolicy.SKIP
  );
}

async function ensureOne(client: Client, job: MaintenanceJob, opts: EnsureSchedulesOptions): Promise<ScheduleChange> {
  const { scheduleId } = MAINTENANCE_JOBS[job];
  const want = wanted(job, opts);
  try {
    await client.schedule.create({ scheduleId, ...want });
    return 'created';
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
  const handle = client.schedule.getHandle(scheduleId);
  if (!differs(await handle.describe(), job, opts)) return 'unchanged';
  // Two workers may update at once: each writes the same wanted schedule (last writer wins). Paused stays paused.
  await handle.update((prev) => ({ ...want, state: { paused: prev.state.paused, note: prev.state.note, remainingActions: prev.state.remainingActions } }));
  return 'updated';
}

/** Creates or updates every maintenance Schedule; returns what happened to each. */
export async function ensureMaintenanceSchedules(client: Client, opts: EnsureSchedulesOptions): Promise<Record<MaintenanceJob, ScheduleChange>> {
  const result = {} as Record<MaintenanceJob, ScheduleChange>;
  for (const job of Object.keys(MAINTENANCE_JOBS) as MaintenanceJob[]) {
    result[job] = await ensureOne(client, job, opts);
  }
  opts.log.info({ schedules: result }, 'maintenance schedules ensured');
  return result;
}
