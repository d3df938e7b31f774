/**
 * What one consistency check run finds (M4.3), as the application sees it, and the
 * snake_case document shape it is stored in (consistency_report.drifted) and served as
 * (GET /admin/consistency/latest). Money is integer micros.
 */
import type { SubjectKind } from './ledger-figures';

/** A run's state: running until it ends; ok (nothing drifted), drift (something did), or failed. */
export const ConsistencyStatus = {
  running: 'running',
  ok: 'ok',
  drift: 'drift',
  failed: 'failed',
} as const;
export type ConsistencyStatus = (typeof ConsistencyStatus)[keyof typeof ConsistencyStatus];

/**
 * What became of a drifted subject:
 * - healed       its Redis counter was rebuilt from the ledger;
 * - busy         confirmed, but the counter moved before the heal (compare-and-set refused): the next run retries;
 * - not_healed   confirmed, healing is off (CONSISTENCY_HEAL=false);
 * - synced_only  Redis agrees with the ledger; only the synced table's copy differs (the next sync rewrites it).
 */
export const DriftOutcome = {
  healed: 'healed',
  busy: 'busy',
  notHealed: 'not_healed',
  syncedOnly: 'synced_only',
} as const;
export type DriftOutcome = (typeof DriftOutcome)[keyof typeof DriftOutcome];

/** One drifted subject: a tenant's quota counter or an API key's budget counter. */
export interface DriftEntry {
  kind: SubjectKind;
  tenantId: string;
  apiKeyId: string | null;
  /** The counter as confirmed (or, for synced_only, as first read); null when it held no integer or was missing. */
  redisMicros: number | null;
  /** Committed amounts + pending reservations, read right after the counter. */
  ledgerMicros: number;
  /** The synced table's copy, and when it was written. */
  syncedMicros: number;
  syncedAt: Date | null;
  /** redis - ledger, a counter holding no integer counting as 0; 0 when only the synced copy differs. */
  driftMicros: number;
  /** synced - ledger, when the subject was quiet since its sync; else null (lagging or never synced). */
  syncedDriftMicros: number | null;
  healed: boolean;
  outcome: DriftOutcome;
}

/** A subject whose counter disagreed with the ledger but kept moving: unconfirmed, not drift. */
export interface BusySubject {
  kind: SubjectKind;
  tenantId: string;
  apiKeyId: string | null;
}

/** The figures of a finished run. */
export interface ConsistencyFindings {
  tenantsChecked: number;
  keysChecked: number;
  tenantDriftMicros: number;
  apikeyDriftMicros: number;
  tenantSyncedDriftMicros: number;
  apikeySyncedDriftMicros: number;
  /** At most MAX_DRIFT_ENTRIES; driftedCount is the whole number. */
  drifted: DriftEntry[];
  driftedCount: number;
  /** Subjects whose Redis counter drifted (confirmed), per kind; synced-only entries are not counted. */
  tenantsDrifted: number;
  keysDrifted: number;
  /** True when this run rebuilt a drifted counter and left no confirmed drift unhealed. */
  healed: boolean;
  heals: number;
  /** Missing counters warmed from the ledger (Redis lost them: not drift). */
  rebuilt: number;
  /** Subjects whose counter disagreed with the ledger at the first read. */
  candidates: number;
  busy: number;
  busySubjects: BusySubject[];
  /** Synced copies not comparable: the subject moved since its sync. */
  syncedLagging: number;
  neverSynced: number;
  thresholdMicros: number;
  /** Drift of a kind summed above the threshold: the alert fired. */
  alerted: boolean;
  durationMs: number;
}

/** A stored run; a running or failed one carries zero findings. */
export interface ConsistencyReport extends ConsistencyFindings {
  id: number;
  status: ConsistencyStatus;
  startedAt: Date;
  finishedAt: Date | null;
  /** The tenants a scoped run checked; null = every tenant. */
  scopeTenantIds: string[] | null;
  error: string | null;
}

/** Entries and busy subjects kept in a report (the sums and counts cover every subject). */
export const MAX_DRIFT_ENTRIES = 1000;
export const MAX_BUSY_SUBJECTS = 100;

/** A drift entry as stored and served. */
export interface DriftEntryDocument {
  kind: SubjectKind;
  tenant_id: string;
  api_key_id?: string;
  redis_micros: number | null;
  ledger_micros: number;
  synced_micros: number;
  synced_at: string | null;
  drift_micros: number;
  synced_drift_micros: number | null;
  healed: boolean;
  outcome: DriftOutcome;
}

export function driftEntryDocument(entry: DriftEntry): DriftEntryDocument {
  return {
    kind: entry.kind,
    tenant_id: entry.tenantId,
    ...(entry.apiKeyId === null ? {} : { api_key_id: entry.apiKeyId }),
    redis_micros: entry.redisMicros,
    ledger_micros: entry.ledgerMicros,
    synced_micros: entry.syncedMicros,
    synced_at: entry.syncedAt === null ? null : entry.syncedAt.toISOString(),
    drift_micros: entry.driftMicros,
    synced_drift_micros: entry.syncedDriftMicros,
    healed: entry.healed,
    outcome: entry.outcome,
  };
}

export function driftEntryFromDocument(doc: DriftEntryDocument): DriftEntry {
  return {
    kind: doc.kind,
    tenantId: doc.tenant_id,
    apiKeyId: doc.api_key_id ?? null,
    redisMicros: doc.redis_micros,
    ledgerMicros: doc.ledger_micros,
    syncedMicros: doc.synced_micros,
    syncedAt: doc.synced_at === null ? null : new Date(doc.synced_at),
    driftMicros: doc.drift_micros,
    syncedDriftMicros: doc.synced_drift_micros,
    healed: doc.healed,
    outcome: doc.outcome,
  };
}

/**
 * What a run returns to its caller (a Temporal activity result: small and serialisable).
 * syncNeeded: a counter was healed or a synced copy disagrees, so a quota / API-key sync
 * now would bring the synced tables in line (M4.5).
 */
export interface ConsistencyRunSummary {
  reportId: number;
  status: 'ok' | 'drift';
  tenantsChecked: number;
  keysChecked: number;
  tenantDriftMicros: number;
  apikeyDriftMicros: number;
  driftedSubjects: number;
  healed: boolean;
  heals: number;
  rebuilt: number;
  busy: number;
  alerted: boolean;
  syncNeeded: boolean;
  durationMs: number;
  /** Budget window counters compared with the ledger (docs/budget-windows.md); absent when windows are not compared. */
  windowsChecked?: number;
  /** Of those, confirmed to differ (logged with ids and amounts; not healed). */
  windowsDrifted?: number;
}
