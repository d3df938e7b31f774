/**
 * POST /admin/sync/:job: runs a maintenance job now (M4.5), beside its Schedule, and
 * answers 202 with the run's workflow id, to follow in the Temporal Web UI or with
 * `temporal workflow show`. Jobs: the keys of MAINTENANCE_JOBS (quota, apikey, ...).
 */
import { Router } from 'express';
import { NotFoundError, ServiceUnavailableError } from '../errors';
import type { Logger } from '../../log';
import type { MaintenanceClient } from '../../schedules/maintenance-client';
import { MAINTENANCE_JOB_NAMES, isMaintenanceJob } from '../../workflows/maintenance-jobs';

export function adminSyncRoutes(deps: { maintenance: MaintenanceClient; logger: Pick<Logger, 'warn'> }): Router {
  const router = Router();

  router.post('/sync/:job', async (req, res) => {
    const job = req.params.job;
    if (!isMaintenanceJob(job)) throw new NotFoundError(`sync job ${job} (one of ${MAINTENANCE_JOB_NAMES.join(', ')})`);
    const started = await deps.maintenance.start(job).catch((err: unknown) => {
      deps.logger.warn({ job, err: (err as Error).message }, 'could not start a maintenance job');
      throw new ServiceUnavailableError('Temporal did not accept the job; try again');
    });
    res.status(202).json({ job, workflow_id: started.workflowId, run_id: started.runId });
  });

  return router;
}
