/**
 * consistency_report (M4.3): one row per consistency check run. A run is written
 * 'running' when it starts and completed (ok / drift / failed) when it ends, so a run
 * that died midway stays visible as one that never finished.
 */
import type { Knex } from 'knex';
import { safeInteger } from '../db/ledger-types';
import {
  ConsistencyStatus,
  driftEntryDocument,
  driftEntryFromDocument,
  type BusySubject,
  type ConsistencyFindings,
  type ConsistencyReport,
  type DriftEntryDocument,
} from './report';

const TABLE = 'consistency_report';

interface ReportRow {
  id: string;
  status: string;
  started_at: Date;
  finished_at: Date | null;
  scope_tenant_ids: string[] | null;
  tenants_checked: number;
  keys_checked: number;
  tenant_drift_micros: string;
  apikey_drift_micros: string;
  tenant_synced_drift_micros: string;
  apikey_synced_drift_micros: string;
  drifted: DriftEntryDocument[];
  drifted_count: number;
  tenants_drifted: number;
  keys_drifted: number;
  healed: boolean;
  heals: number;
  rebuilt: number;
  candidates: number;
  busy: number;
  busy_subjects: Array<{ kind: BusySubject['kind']; tenant_id: string; api_key_id?: string }>;
  synced_lagging: number;
  never_synced: number;
  threshold_micros: string;
  alerted: boolean;
  duration_ms: number | null;
  error: string | null;
}

/** Thrown when a stored report holds a status outside the table's vocabulary. */
export class UnexpectedReportStatusError extends Error {
  override name = 'UnexpectedReportStatusError';
}

function statusOf(value: string): ConsistencyStatus {
  const found = Object.values(ConsistencyStatus).find((s) => s === value);
  if (found === undefined) throw new UnexpectedReportStatusError(`consistency_report.status holds ${value}`);
  return found;
}

function toReport(row: ReportRow): ConsistencyReport {
  const base = {
    id: safeInteger('id', row.id),
    status: statusOf(row.status),
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    scopeTenantIds: row.scope_tenant_ids,
    error: row.error,
  };
  // A running or failed run holds the table's defaults (zero, empty, false) for its findings.
  return {
    ...base,
    tenantsChecked: row.tenants_checked,
    keysChecked: row.keys_checked,
    tenantDriftMicros: safeInteger('tenant_drift_micros', row.tenant_drift_micros),
    apikeyDriftMicros: safeInteger('apikey_drift_micros', row.apikey_drift_micros),
    tenantSyncedDriftMicros: safeInteger('tenant_synced_drift_micros', row.tenant_synced_drift_micros),
    apikeySyncedDriftMicros: safeInteger('apikey_synced_drift_micros', row.apikey_synced_drift_micros),
    drifted: row.drifted.map(driftEntryFromDocument),
    driftedCount: row.drifted_count,
    tenantsDrifted: row.tenants_drifted,
    keysDrifted: row.keys_drifted,
    healed: row.healed,
    heals: row.heals,
    rebuilt: row.rebuilt,
    candidates: row.candidates,
    busy: row.busy,
    busySubjects: row.busy_subjects.map((b) => ({ kind: b.kind, tenantId: b.tenant_id, apiKeyId: b.api_key_id ?? null })),
    syncedLagging: row.synced_lagging,
    neverSynced: row.never_synced,
    thresholdMicros: safeInteger('threshold_micros', row.threshold_micros),
    alerted: row.alerted,
    durationMs: row.duration_ms ?? 0,
  };
}

export function createConsistencyReportRepository(db: Knex) {
  return {
    /** Records a run that starts now; its id. */
    async begin(input: { scopeTenantIds: readonly string[] | null; thresholdMicros: number }): Promise<number> {
      const [row] = await db(TABLE)
        .insert({ status: ConsistencyStatus.running, scope_tenant_ids: input.scopeTenantIds === null ? null : [...input.scopeTenantIds], threshold_micros: input.thresholdMicros })
        .returning<Array<{ id: string }>>('id');
      return safeInteger('id', row?.id);
    },

    /** Completes a run with what it found: status drift when any subject drifted, else ok. */
    async finish(id: number, findings: ConsistencyFindings): Promise<ConsistencyReport> {
      const [row] = await db(TABLE)
        .where({ id, status: ConsistencyStatus.running })
        .update({
          status: findings.driftedCount > 0 ? ConsistencyStatus.drift : ConsistencyStatus.ok,
          finished_at: db.fn.now(),
          tenants_checked: findings.tenantsChecked,
          keys_checked: findings.keysChecked,
          tenant_drift_micros: findings.tenantDriftMicros,
          apikey_drift_micros: findings.apikeyDriftMicros,
          tenant_synced_drift_micros: findings.tenantSyncedDriftMicros,
          apikey_synced_drift_micros: findings.apikeySyncedDriftMicros,
          drifted: JSON.stringify(findings.drifted.map(driftEntryDocument)),
          drifted_count: findings.driftedCount,
          tenants_drifted: findings.tenantsDrifted,
          keys_drifted: findings.keysDrifted,
          healed: findings.healed,
          heals: findings.heals,
          rebuilt: findings.rebuilt,
          candidates: findings.candidates,
          busy: findings.busy,
          busy_subjects: JSON.stringify(findings.busySubjects.map((b) => ({ kind: b.kind, tenant_id: b.tenantId, ...(b.apiKeyId === null ? {} : { api_key_id: b.apiKeyId }) }))),
          synced_lagging: findings.syncedLagging,
          never_synced: findings.neverSynced,
          threshold_micros: findings.thresholdMicros,
          alerted: findings.alerted,
          duration_ms: findings.durationMs,
        })
        .returning<ReportRow[]>('*');
      if (!row) throw new Error(`consistency report ${id} is not running`);
      return toReport(row);
    },

    /** Marks a run failed (no secrets: the message of the error that ended it). */
    async fail(id: number, message: string): Promise<void> {
      await db(TABLE).where({ id, status: ConsistencyStatus.running }).update({ status: ConsistencyStatus.failed, finished_at: db.fn.now(), error: message.slice(0, 2000) });
    },

    /** The most recent run, whatever its state; undefined before the first. */
    async latest(): Promise<ConsistencyReport | undefined> {
      const row = await db<ReportRow>(TABLE).orderBy('id', 'desc').first();
      return row === undefined ? undefined : toReport(row);
    },

    /** The most recent completed run over every tenant (not a scoped one): what the consistency gauges export. */
    async latestCompleted(): Promise<(ConsistencyReport & { finishedAt: Date }) | undefined> {
      const row = await db<ReportRow>(TABLE)
        .whereIn('status', [ConsistencyStatus.ok, ConsistencyStatus.drift])
        .whereNull('scope_tenant_ids')
        .orderBy('id', 'desc')
        .first();
      if (row === undefined) return undefined;
      const report = toReport(row);
      return { ...report, finishedAt: report.finishedAt ?? report.startedAt };
    },
  };
}

export type ConsistencyReportRepository = ReturnType<typeof createConsistencyReportRepository>;
