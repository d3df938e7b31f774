/**
 * GET /admin/consistency/latest (M4.3): the most recent consistency check run, in the
 * contract's shape {status, started_at, finished_at, tenants_checked, keys_checked,
 * tenant_drift_micros, apikey_drift_micros, drifted: [...], healed} plus the run's other
 * figures; 404 before the first run. docs/consistency.md explains every field.
 */
import { Router } from 'express';
import { NotFoundError } from '../errors';
import type { ConsistencyReportRepository } from '../../consistency/report-repository';
import { driftEntryDocument, type ConsistencyReport, type DriftEntryDocument } from '../../consistency/report';

export interface ConsistencyReportView {
  id: number;
  status: ConsistencyReport['status'];
  started_at: string;
  finished_at: string | null;
  tenants_checked: number;
  keys_checked: number;
  tenant_drift_micros: number;
  apikey_drift_micros: number;
  drifted: DriftEntryDocument[];
  healed: boolean;
  scope_tenant_ids: string[] | null;
  tenant_synced_drift_micros: number;
  apikey_synced_drift_micros: number;
  drifted_count: number;
  tenants_drifted: number;
  keys_drifted: number;
  heals: number;
  rebuilt: number;
  candidates: number;
  busy: number;
  busy_subjects: Array<{ kind: string; tenant_id: string; api_key_id?: string }>;
  synced_lagging: number;
  never_synced: number;
  threshold_micros: number;
  alerted: boolean;
  duration_ms: number;
  error: string | null;
}

export function toConsistencyReportView(r: ConsistencyReport): ConsistencyReportView {
  return {
    id: r.id,
    status: r.status,
    started_at: r.startedAt.toISOString(),
    finished_at: r.finishedAt === null ? null : r.finishedAt.toISOString(),
    tenants_checked: r.tenantsChecked,
    keys_checked: r.keysChecked,
    tenant_drift_micros: r.tenantDriftMicros,
    apikey_drift_micros: r.apikeyDriftMicros,
    drifted: r.drifted.map(driftEntryDocument),
    healed: r.healed,
    scope_tenant_ids: r.scopeTenantIds,
    tenant_synced_drift_micros: r.tenantSyncedDriftMicros,
    apikey_synced_drift_micros: r.apikeySyncedDriftMicros,
    drifted_count: r.driftedCount,
    tenants_drifted: r.tenantsDrifted,
    keys_drifted: r.keysDrifted,
    heals: r.heals,
    rebuilt: r.rebuilt,
    candidates: r.candidates,
    busy: r.busy,
    busy_subjects: r.busySubjects.map((b) => ({ kind: b.kind, tenant_id: b.tenantId, ...(b.apiKeyId === null ? {} : { api_key_id: b.apiKeyId }) })),
    synced_lagging: r.syncedLagging,
    never_synced: r.neverSynced,
    threshold_micros: r.thresholdMicros,
    alerted: r.alerted,
    duration_ms: r.durationMs,
    error: r.error,
  };
}

export function adminConsistencyRoutes(deps: { reports: Pick<ConsistencyReportRepository, 'latest'> }): Router {
  const router = Router();

  router.get('/consistency/latest', async (_req, res) => {
    const report = await deps.reports.latest();
    if (!report) throw new NotFoundError('consistency report');
    res.json(toConsistencyReportView(report));
  });

  return router;
}
