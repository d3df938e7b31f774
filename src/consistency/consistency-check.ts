/**
 * The consistency check (M4.3, M12): for every tenant and API key, compares the Redis
 * counter (used_micros / spent_micros), the ledger (committed + pending, one snapshot) and
 * the synced table; confirms drift before declaring it; heals it; writes a report
 * (consistency_report, GET /admin/consistency/latest); exports the figures and alerts.
 * docs/consistency.md is the operator's view.
 *
 * Correct while traffic runs. A counter read while a request moves between Redis and the
 * ledger differs for a moment (quota_check.lua reserves BEFORE the pending row is written;
 * BillingStep commits the ledger BEFORE it settles Redis). So the first pass only finds
 * candidates; each is read again after CONSISTENCY_CONFIRM_GRACE_MS, Redis first and the
 * ledger right after:
 *   - agrees now                                     -> transient, nothing to report;
 *   - disagrees, and neither the counter's token     -> confirmed drift: healed with the
 *     (warmup_id, version) nor the ledger's             snapshot just read, compare-and-set
 *     fingerprint moved since the last read             on the token just read;
 *   - disagrees but something moved                  -> read again next round; still moving
 *                                                       after the last round: busy.
 * A missing counter is not drift (Redis lost it): it is warmed as a request's warm-up would
 * and reported as rebuilt.
 */
import type { Redis } from '../redis/client';
import type { Config } from '../config';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { QuotaScripts } from '../redis/scripts';
import type { CounterToken } from '../redis/scripts';
import { readCounters, sameToken, type CounterReading } from './counter-reader';
import { CALLS_IN_FLIGHT, createCounterRebuild, mapLimit, subjectId } from './counter-rebuild';
import { SubjectKind, sameFingerprint, type ConsistencyLedger, type LedgerFingerprint, type SubjectFigures, type SubjectRef, type SubjectSnapshot } from './ledger-figures';
import {
  DriftOutcome,
  MAX_BUSY_SUBJECTS,
  MAX_DRIFT_ENTRIES,
  type ConsistencyFindings,
  type ConsistencyRunSummary,
  type DriftEntry,
} from './report';
import type { ConsistencyReportRepository } from './report-repository';
import type { BudgetWindowCheckResult } from './budget-window-check';

export interface ConsistencySettings {
  /** Drift of a kind summed above this alerts (CONSISTENCY_DRIFT_THRESHOLD_MICROS); 0 = any. */
  driftThresholdMicros: number;
  /** CONSISTENCY_CONFIRM_GRACE_MS; also the margin that makes a synced copy lagging. */
  confirmGraceMs: number;
  /** CONSISTENCY_CONFIRM_ROUNDS. */
  confirmRounds: number;
  /** CONSISTENCY_HEAL. */
  heal: boolean;
  /** RESERVATION_TTL_SECONDS: how late a settled request's Redis settlement may still come. */
  recordTtlSeconds: number;
}

export function consistencySettings(config: Pick<Config, 'CONSISTENCY_DRIFT_THRESHOLD_MICROS' | 'CONSISTENCY_CONFIRM_GRACE_MS' | 'CONSISTENCY_CONFIRM_ROUNDS' | 'CONSISTENCY_HEAL' | 'RESERVATION_TTL_SECONDS'>): ConsistencySettings {
  return {
    driftThresholdMicros: config.CONSISTENCY_DRIFT_THRESHOLD_MICROS,
    confirmGraceMs: config.CONSISTENCY_CONFIRM_GRACE_MS,
    confirmRounds: config.CONSISTENCY_CONFIRM_ROUNDS,
    heal: config.CONSISTENCY_HEAL,
    recordTtlSeconds: config.RESERVATION_TTL_SECONDS,
  };
}

export type ConsistencyMetrics = Pick<BillingMetrics,
  'consistencyDriftMicros' | 'consistencySyncedDriftMicros' | 'consistencyDriftedSubjects' | 'consistencyBusySubjects'
  | 'consistencyThresholdMicros' | 'consistencyLastRun' | 'consistencyHeals' | 'consistencyRebuilds' | 'consistencyRuns'>;

export interface ConsistencyCheckDeps {
  ledger: Pick<ConsistencyLedger, 'allSubjects' | 'snapshots'>;
  reports: Pick<ConsistencyReportRepository, 'begin' | 'finish' | 'fail'>;
  redis: Redis;
  scripts: Pick<QuotaScripts, 'warmTenant' | 'warmKey' | 'replaceTenant' | 'replaceKey'>;
  metrics: ConsistencyMetrics;
  log: Pick<Logger, 'info' | 'warn' | 'error'>;
  settings: ConsistencySettings;
  /** @default setTimeout */
  sleep?: (ms: number) => Promise<void>;
  /**
   * The budget window comparison (./budget-window-check.ts), run after the lifetime check on
   * the same scope; its figures join the summary and a confirmed window drift is logged.
   * Without it windows are not compared.
   */
  budgetWindows?: (scope: { tenantIds?: readonly string[] }) => Promise<BudgetWindowCheckResult>;
}

export interface ConsistencyRunOptions {
  /** Check only these tenants and their keys (ops, tests); default every tenant. */
  tenantIds?: readonly string[];
}

/** A counter that disagreed with the ledger at its last read. */
interface Candidate {
  subject: SubjectFigures;
  token: CounterToken;
  fingerprint: LedgerFingerprint;
}

const sleepFor = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function createConsistencyCheck(deps: ConsistencyCheckDeps) {
  const { settings } = deps;
  const sleep = deps.sleep ?? sleepFor;
  const rebuild = createCounterRebuild({ scripts: deps.scripts, ledger: deps.ledger, recordTtlSeconds: settings.recordTtlSeconds });

  function syncedDrift(subject: SubjectFigures): number | null {
    return subject.synced.comparable ? subject.synced.micros - subject.usageMicros : null;
  }

  function driftEntry(subject: SubjectFigures, reading: NonNullable<CounterReading>, snapshot: SubjectSnapshot, outcome: DriftOutcome): DriftEntry {
    return {
      kind: subject.kind,
      tenantId: subject.tenantId,
      apiKeyId: subject.apiKeyId,
      redisMicros: reading.usedMicros,
      ledgerMicros: snapshot.usageMicros,
      syncedMicros: subject.synced.micros,
      syncedAt: subject.synced.syncedAt,
      // A counter that holds no integer counts as 0.
      driftMicros: (reading.usedMicros ?? 0) - snapshot.usageMicros,
      syncedDriftMicros: syncedDrift(subject),
      healed: outcome === DriftOutcome.healed,
      outcome,
    };
  }

  async function heal(candidate: Candidate, reading: NonNullable<CounterReading>, snapshot: SubjectSnapshot): Promise<DriftEntry> {
    if (!settings.heal) return driftEntry(candidate.subject, reading, snapshot, DriftOutcome.notHealed);
    const healed = await rebuild.heal(snapshot, reading.token);
    if (healed) deps.metrics.consistencyHeals.inc({ kind: candidate.subject.kind });
    return driftEntry(candidate.subject, reading, snapshot, healed ? DriftOutcome.healed : DriftOutcome.busy);
  }

  /** The confirmation rounds over the first pass's candidates (see the module comment). */
  async function confirm(candidates: Candidate[]): Promise<{ drifted: DriftEntry[]; busy: SubjectRef[]; rebuilt: SubjectRef[] }> {
    const drifted: DriftEntry[] = [];
    const rebuilt: SubjectRef[] = [];
    let open = candidates;
    for (let round = 0; round < settings.confirmRounds && open.length > 0; round++) {
      await sleep(settings.confirmGraceMs);
      // Redis first, the ledger right after: a heal carries a snapshot at least as new as the token it checks.
      const readings = await readCounters(deps.redis, open.map((c) => c.subject));
      const snapshots = await rebuild.snapshotsOf(open.map((c) => c.subject));
      const next: Candidate[] = [];
      const confirmed: Array<{ candidate: Candidate; reading: NonNullable<CounterReading>; snapshot: SubjectSnapshot }> = [];
      const vanished: SubjectSnapshot[] = [];
      for (const [i, candidate] of open.entries()) {
        const reading = readings[i];
        const snapshot = snapshots.get(subjectId(candidate.subject));
        if (reading === undefined || snapshot === undefined) continue; // the subject no longer exists
        if (reading === null) {
          if (snapshot.active) vanished.push(snapshot);
        } else if (reading.usedMicros === snapshot.usageMicros) {
          // transient: a request was between Redis and the ledger at the first read
        } else if (sameToken(reading.token, candidate.token) && sameFingerprint(snapshot.fingerprint, candidate.fingerprint)) {
          confirmed.push({ candidate, reading, snapshot });
        } else {
          next.push({ subject: candidate.subject, token: reading.token, fingerprint: snapshot.fingerprint });
        }
      }
      drifted.push(...(await mapLimit(confirmed, CALLS_IN_FLIGHT, (c) => heal(c.candidate, c.reading, c.snapshot))));
      const created = await mapLimit(vanished, CALLS_IN_FLIGHT, (snapshot) => rebuild.warm(snapshot));
      rebuilt.push(...vanished.filter((_, i) => created[i]));
      open = next;
    }
    return { drifted, busy: open.map((c) => c.subject), rebuilt };
  }

  async function check(tenantIds: readonly string[] | undefined, startedAt: number): Promise<ConsistencyFindings> {
    const { tenants, keys } = await deps.ledger.allSubjects({ tenantIds, syncMarginMs: settings.confirmGraceMs });
    const subjects = [...tenants, ...keys];
    const readings = await readCounters(deps.redis, subjects);

    const candidates: Candidate[] = [];
    const missing: SubjectFigures[] = [];
    for (const [i, subject] of subjects.entries()) {
      const reading = readings[i];
      if (reading === null || reading === undefined) {
        if (subject.active) missing.push(subject);
      } else if (reading.usedMicros !== subject.usageMicros) {
        candidates.push({ subject, token: reading.token, fingerprint: subject.fingerprint });
      }
    }

    const warmed = await rebuild.warmMissing(missing);
    const confirmed = await confirm(candidates);
    const rebuilt = [...warmed, ...confirmed.rebuilt];
    for (const subject of rebuilt) deps.metrics.consistencyRebuilds.inc({ kind: subject.kind });

    // Synced copies that must equal the ledger and do not, for subjects whose counter did not drift.
    const driftedIds = new Set(confirmed.drifted.map(subjectId));
    const syncedOnly: DriftEntry[] = subjects.flatMap((s, i) => {
      const drift = syncedDrift(s);
      if (drift === null || drift === 0 || driftedIds.has(subjectId(s))) return [];
      return [{
        kind: s.kind, tenantId: s.tenantId, apiKeyId: s.apiKeyId, redisMicros: readings[i]?.usedMicros ?? null, ledgerMicros: s.usageMicros,
        syncedMicros: s.synced.micros, syncedAt: s.synced.syncedAt, driftMicros: 0, syncedDriftMicros: drift, healed: false, outcome: DriftOutcome.syncedOnly,
      }];
    });
    const drifted = [...confirmed.drifted, ...syncedOnly];

    const sumAbs = (kind: SubjectKind, of: (e: DriftEntry) => number | null): number =>
      drifted.filter((e) => e.kind === kind).reduce((sum, e) => sum + Math.abs(of(e) ?? 0), 0);
    const tenantDriftMicros = sumAbs(SubjectKind.tenant, (e) => e.driftMicros);
    const apikeyDriftMicros = sumAbs(SubjectKind.apiKey, (e) => e.driftMicros);
    const heals = confirmed.drifted.filter((e) => e.healed).length;
    return {
      tenantsChecked: tenants.length,
      keysChecked: keys.length,
      tenantDriftMicros,
      apikeyDriftMicros,
      tenantSyncedDriftMicros: sumAbs(SubjectKind.tenant, (e) => e.syncedDriftMicros),
      apikeySyncedDriftMicros: sumAbs(SubjectKind.apiKey, (e) => e.syncedDriftMicros),
      drifted: drifted.slice(0, MAX_DRIFT_ENTRIES),
      driftedCount: drifted.length,
      tenantsDrifted: confirmed.drifted.filter((e) => e.kind === SubjectKind.tenant).length,
      keysDrifted: confirmed.drifted.filter((e) => e.kind === SubjectKind.apiKey).length,
      healed: heals > 0 && heals === confirmed.drifted.length,
      heals,
      rebuilt: rebuilt.length,
      candidates: candidates.length,
      busy: confirmed.busy.length,
      busySubjects: confirmed.busy.slice(0, MAX_BUSY_SUBJECTS).map((s) => ({ kind: s.kind, tenantId: s.tenantId, apiKeyId: s.apiKeyId })),
      syncedLagging: subjects.filter((s) => s.synced.syncedAt !== null && !s.synced.comparable).length,
      neverSynced: subjects.filter((s) => s.synced.syncedAt === null).length,
      thresholdMicros: settings.driftThresholdMicros,
      alerted: tenantDriftMicros > settings.driftThresholdMicros || apikeyDriftMicros > settings.driftThresholdMicros,
      durationMs: Date.now() - startedAt,
    };
  }

  /** The figures of a run over every tenant become the gauges (a scoped run is no picture of the whole). */
  function exportGauges(findings: ConsistencyFindings, finishedAt: Date): void {
    const m = deps.metrics;
    m.consistencyDriftMicros.set({ kind: SubjectKind.tenant }, findings.tenantDriftMicros);
    m.consistencyDriftMicros.set({ kind: SubjectKind.apiKey }, findings.apikeyDriftMicros);
    m.consistencySyncedDriftMicros.set({ kind: SubjectKind.tenant }, findings.tenantSyncedDriftMicros);
    m.consistencySyncedDriftMicros.set({ kind: SubjectKind.apiKey }, findings.apikeySyncedDriftMicros);
    m.consistencyDriftedSubjects.set({ kind: SubjectKind.tenant }, findings.tenantsDrifted);
    m.consistencyDriftedSubjects.set({ kind: SubjectKind.apiKey }, findings.keysDrifted);
    m.consistencyBusySubjects.set(findings.busy);
    m.consistencyThresholdMicros.set(findings.thresholdMicros);
    m.consistencyLastRun.set(finishedAt.getTime() / 1000);
  }

  /** The window comparison's figures; a failure there is logged, never fails the lifetime check (already reported). */
  async function compareWindows(options: ConsistencyRunOptions): Promise<Pick<ConsistencyRunSummary, 'windowsChecked' | 'windowsDrifted'>> {
    if (!deps.budgetWindows) return {};
    try {
      const result = await deps.budgetWindows({ tenantIds: options.tenantIds });
      if (result.drifted.length > 0) {
        // Ids and amounts only.
        deps.log.warn({ windowsChecked: result.windowsChecked, windows: result.drifted.slice(0, 20) }, 'consistency drift: budget window counters disagreed with the ledger');
      }
      return { windowsChecked: result.windowsChecked, windowsDrifted: result.drifted.length };
    } catch (err) {
      deps.log.error({ err: err instanceof Error ? err.message : String(err) }, 'budget window comparison failed');
      return {};
    }
  }

  return {
    /** One check; the summary a scheduled activity returns. Throws (report marked failed) when Redis or PostgreSQL fail. */
    async run(options: ConsistencyRunOptions = {}): Promise<ConsistencyRunSummary> {
      const startedAt = Date.now();
      const reportId = await deps.reports.begin({ scopeTenantIds: options.tenantIds ?? null, thresholdMicros: settings.driftThresholdMicros });
      let findings: ConsistencyFindings;
      try {
        findings = await check(options.tenantIds, startedAt);
      } catch (err) {
        deps.metrics.consistencyRuns.inc({ status: 'failed' });
        const message = err instanceof Error ? err.message : String(err);
        await deps.reports.fail(reportId, message).catch((failErr: unknown) => deps.log.error({ reportId, err: (failErr as Error).message }, 'could not mark the consistency report failed'));
        deps.log.error({ reportId, err: message }, 'consistency check failed');
        throw err;
      }
      const report = await deps.reports.finish(reportId, findings);
      const status = findings.driftedCount > 0 ? 'drift' : 'ok';
      deps.metrics.consistencyRuns.inc({ status });
      if (options.tenantIds === undefined) exportGauges(findings, report.finishedAt ?? new Date());

      const figures = {
        reportId, status, tenantsChecked: findings.tenantsChecked, keysChecked: findings.keysChecked,
        tenantDriftMicros: findings.tenantDriftMicros, apikeyDriftMicros: findings.apikeyDriftMicros, heals: findings.heals,
        rebuilt: findings.rebuilt, busy: findings.busy, durationMs: findings.durationMs,
      };
      if (findings.alerted) {
        // Ids and amounts only.
        const subjects = findings.drifted.filter((e) => e.outcome !== DriftOutcome.syncedOnly).slice(0, 20)
          .map((e) => ({ kind: e.kind, tenantId: e.tenantId, apiKeyId: e.apiKeyId, redisMicros: e.redisMicros, ledgerMicros: e.ledgerMicros, driftMicros: e.driftMicros, healed: e.healed }));
        deps.log.warn({ ...figures, thresholdMicros: findings.thresholdMicros, subjects }, 'consistency drift: Redis counters disagreed with the ledger');
      } else {
        deps.log.info(figures, 'consistency check');
      }
      const windows = await compareWindows(options);
      return {
        ...windows,
        reportId,
        status,
        tenantsChecked: findings.tenantsChecked,
        keysChecked: findings.keysChecked,
        tenantDriftMicros: findings.tenantDriftMicros,
        apikeyDriftMicros: findings.apikeyDriftMicros,
        driftedSubjects: findings.driftedCount,
        healed: findings.healed,
        heals: findings.heals,
        rebuilt: findings.rebuilt,
        busy: findings.busy,
        alerted: findings.alerted,
        syncNeeded: findings.heals > 0 || findings.tenantSyncedDriftMicros > 0 || findings.apikeySyncedDriftMicros > 0,
        durationMs: findings.durationMs,
      };
    },
  };
}

export type ConsistencyCheck = ReturnType<typeof createConsistencyCheck>;
