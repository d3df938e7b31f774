/**
 * Every billing metric, registered once per Registry (the API and the worker each
 * expose theirs at /metrics). Names are a contract with deploy/prometheus/alerts.yml
 * and the Grafana dashboard (test/deploy checks them).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function once<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** Where the pending-reservation gauges read from (the ledger); refreshed on scrape. */
export type PendingSnapshot = () => Promise<{ count: number; oldestSeconds: number }>;

/** The figures of the latest completed consistency check over every tenant (M4.3). */
export interface ConsistencyFigures {
  finishedAt: Date;
  tenantDriftMicros: number;
  apikeyDriftMicros: number;
  tenantSyncedDriftMicros: number;
  apikeySyncedDriftMicros: number;
  tenantsDrifted: number;
  keysDrifted: number;
  busy: number;
  thresholdMicros: number;
}

/**
 * Where the consistency gauges read from (the latest report in PostgreSQL); refreshed on
 * scrape, so every replica, and a restarted one, exports the last check whoever ran it.
 */
export type ConsistencySnapshot = () => Promise<ConsistencyFigures | undefined>;

/** Where the dispatch outbox gauges read from (dispatch_outbox); refreshed on scrape. */
export type OutboxSnapshot = () => Promise<{ depth: number; oldestSeconds: number }>;

/** The usage export's figures per configured destination (docs/usage-export.md); refreshed on scrape. */
export type UsageExportSnapshot = () => Promise<Record<string, { undelivered: number; held: number; lagSeconds: number; reconciliationDifferences: number }>>;

export function createBillingMetrics(registry: Registry, opts: { pending?: PendingSnapshot; consistency?: ConsistencySnapshot; outbox?: OutboxSnapshot; usageExport?: UsageExportSnapshot } = {}) {
  const registers = [registry];
  let pending: Promise<{ count: number; oldestSeconds: number }> | undefined;
  // One ledger query serves both gauges of one scrape.
  const readPending = (): Promise<{ count: number; oldestSeconds: number }> =>
    (pending ??= (opts.pending ?? (() => Promise.resolve({ count: 0, oldestSeconds: 0 })))().finally(() => (pending = undefined)));
  let consistency: Promise<ConsistencyFigures | undefined> | undefined;
  // One report query serves every consistency gauge of one scrape; without a source the check's run sets them.
  const readConsistency = (): Promise<ConsistencyFigures | undefined> | undefined =>
    opts.consistency && (consistency ??= opts.consistency().catch(() => undefined).finally(() => (consistency = undefined)));
  const perKind = (gauge: Gauge<'kind'>, tenant: number, apiKey: number): void => {
    gauge.set({ kind: 'tenant' }, tenant);
    gauge.set({ kind: 'api_key' }, apiKey);
  };
  // One snapshot of the export tables serves its four gauges of one scrape.
  let usageExport: ReturnType<UsageExportSnapshot> | undefined;
  const readUsageExport = (): ReturnType<UsageExportSnapshot> =>
    (usageExport ??= (opts.usageExport ?? (() => Promise.resolve({})))().catch(() => ({})).finally(() => (usageExport = undefined)));
  const exportGauge = (name: string, help: string, pick: (f: Awaited<ReturnType<UsageExportSnapshot>>[string]) => number) =>
    once(registry, name, () => new Gauge({
      name, help, labelNames: ['destination'], registers,
      async collect() {
        if (!opts.usageExport) return;
        for (const [destination, figures] of Object.entries(await readUsageExport())) this.set({ destination }, pick(figures));
      },
    }));
  let outbox: Promise<{ depth: number; oldestSeconds: number }> | undefined;
  const readOutbox = (): Promise<{ depth: number; oldestSeconds: number }> =>
    (outbox ??= (opts.outbox ?? (() => Promise.resolve({ depth: 0, oldestSeconds: 0 })))().finally(() => (outbox = undefined)));
  return {
    admissionDuration: once(registry, 'billing_admission_duration_seconds', () => new Histogram({
      name: 'billing_admission_duration_seconds', help: 'QuotaCheckStep latency: estimate reserved against quota and budget', labelNames: ['outcome'], buckets: LATENCY_BUCKETS, registers,
    })),
    admissions: once(registry, 'billing_admission_total', () => new Counter({
      name: 'billing_admission_total', help: 'Admission decisions by outcome and path (redis, postgres fallback)', labelNames: ['outcome', 'path'], registers,
    })),
    settlementDuration: once(registry, 'billing_settlement_duration_seconds', () => new Histogram({
      name: 'billing_settlement_duration_seconds', help: 'BillingStep latency: ledger commit and cost-difference adjustment', buckets: LATENCY_BUCKETS, registers,
    })),
    settlements: once(registry, 'billing_settlement_total', () => new Counter({
      name: 'billing_settlement_total', help: 'Settlements by outcome and token source', labelNames: ['outcome', 'token_source'], registers,
    })),
    costMicros: once(registry, 'billing_cost_micros_total', () => new Counter({
      name: 'billing_cost_micros_total', help: 'Committed cost in micros', labelNames: ['model'], registers,
    })),
    overageMicros: once(registry, 'billing_overage_micros_total', () => new Counter({
      name: 'billing_overage_micros_total', help: 'Settled cost above its reservation, in micros', registers,
    })),
    upstreamDuration: once(registry, 'billing_upstream_duration_seconds', () => new Histogram({
      name: 'billing_upstream_duration_seconds', help: 'Upstream call duration', labelNames: ['model', 'outcome'], buckets: LATENCY_BUCKETS, registers,
    })),
    upstreamTtfb: once(registry, 'billing_upstream_ttfb_seconds', () => new Histogram({
      name: 'billing_upstream_ttfb_seconds', help: 'Upstream time to first byte', buckets: LATENCY_BUCKETS, registers,
    })),
    channelFailures: once(registry, 'billing_channel_failures_total', () => new Counter({
      name: 'billing_channel_failures_total', help: 'Upstream channel failures before the first byte (the request moved on to another channel), by channel', labelNames: ['channel'], registers,
    })),
    channelCooldowns: once(registry, 'billing_channel_cooldowns_total', () => new Counter({
      name: 'billing_channel_cooldowns_total', help: 'Cool-downs started: a channel that failed too often before the first byte is skipped for a while, by channel', labelNames: ['channel'], registers,
    })),
    upstreamTokens: once(registry, 'billing_upstream_tokens_total', () => new Counter({
      name: 'billing_upstream_tokens_total', help: 'Tokens billed by kind', labelNames: ['model', 'kind'], registers,
    })),
    httpDuration: once(registry, 'http_request_duration_seconds', () => new Histogram({
      name: 'http_request_duration_seconds', help: 'HTTP request duration by route', labelNames: ['method', 'route', 'status'], buckets: LATENCY_BUCKETS, registers,
    })),
    edgeRefusals: once(registry, 'billing_edge_refusals_total', () => new Counter({
      name: 'billing_edge_refusals_total', help: 'Requests refused at the edge, before any workflow, by reason (insufficient_quota, budget_exceeded, rate_limit_requests, rate_limit_tokens, parallel_requests)', labelNames: ['reason'], registers,
    })),
    shedRequests: once(registry, 'billing_shed_requests_total', () => new Counter({
      name: 'billing_shed_requests_total', help: 'Requests answered 503 at once because this API process was at its in-flight bound', registers,
    })),
    inflightRequests: once(registry, 'billing_inflight_requests', () => new Gauge({
      name: 'billing_inflight_requests', help: 'Durable requests in flight in this API process (admission to the end of the response)', registers,
    })),
    inflightLimit: once(registry, 'billing_inflight_limit', () => new Gauge({
      name: 'billing_inflight_limit', help: 'The in-flight bound of this API process (MAX_INFLIGHT_REQUESTS)', registers,
    })),
    redisFallbackActive: once(registry, 'billing_redis_fallback_active', () => new Gauge({
      name: 'billing_redis_fallback_active', help: '1 while admission runs on the PostgreSQL fallback', registers,
    })),
    sweptReservations: once(registry, 'billing_swept_reservations_total', () => new Counter({
      name: 'billing_swept_reservations_total', help: 'Stale pending reservations the sweeper examined, by outcome: committed or voided by the sweep, still_running (left to its workflow), error (left pending)', labelNames: ['outcome'], registers,
    })),
    pendingReservations: once(registry, 'billing_pending_reservations', () => new Gauge({
      name: 'billing_pending_reservations', help: 'Ledger rows still pending (nothing may stay pending forever)', registers,
      async collect() {
        if (opts.pending) this.set((await readPending().catch(() => ({ count: 0 }))).count);
      },
    })),
    pendingOldestAge: once(registry, 'billing_pending_oldest_age_seconds', () => new Gauge({
      name: 'billing_pending_oldest_age_seconds', help: 'Age of the oldest pending ledger row', registers,
      async collect() {
        if (opts.pending) this.set((await readPending().catch(() => ({ oldestSeconds: 0 }))).oldestSeconds);
      },
    })),
    consistencyDriftMicros: once(registry, 'billing_consistency_drift_micros', () => new Gauge({
      name: 'billing_consistency_drift_micros', help: 'Latest consistency check: sum of |Redis counter - ledger| over the confirmed drifted counters, in micros', labelNames: ['kind'], registers,
      async collect() {
        const f = await readConsistency();
        if (f) perKind(this, f.tenantDriftMicros, f.apikeyDriftMicros);
      },
    })),
    consistencySyncedDriftMicros: once(registry, 'billing_consistency_synced_drift_micros', () => new Gauge({
      name: 'billing_consistency_synced_drift_micros', help: 'Latest consistency check: sum of |synced table - ledger| over subjects quiet since their sync, in micros', labelNames: ['kind'], registers,
      async collect() {
        const f = await readConsistency();
        if (f) perKind(this, f.tenantSyncedDriftMicros, f.apikeySyncedDriftMicros);
      },
    })),
    consistencyDriftedSubjects: once(registry, 'billing_consistency_drifted_subjects', () => new Gauge({
      name: 'billing_consistency_drifted_subjects', help: 'Latest consistency check: counters confirmed to differ from the ledger', labelNames: ['kind'], registers,
      async collect() {
        const f = await readConsistency();
        if (f) perKind(this, f.tenantsDrifted, f.keysDrifted);
      },
    })),
    consistencyBusySubjects: once(registry, 'billing_consistency_busy_subjects', () => new Gauge({
      name: 'billing_consistency_busy_subjects', help: 'Latest consistency check: counters that disagreed with the ledger but kept moving (unconfirmed, not drift)', registers,
      async collect() {
        const f = await readConsistency();
        if (f) this.set(f.busy);
      },
    })),
    consistencyThresholdMicros: once(registry, 'billing_consistency_drift_threshold_micros', () => new Gauge({
      name: 'billing_consistency_drift_threshold_micros', help: 'CONSISTENCY_DRIFT_THRESHOLD_MICROS of the latest consistency check: drift above it alerts', registers,
      async collect() {
        const f = await readConsistency();
        if (f) this.set(f.thresholdMicros);
      },
    })),
    consistencyLastRun: once(registry, 'billing_consistency_last_run_timestamp_seconds', () => new Gauge({
      name: 'billing_consistency_last_run_timestamp_seconds', help: 'When the latest consistency check over every tenant completed (Unix seconds; 0 = never)', registers,
      async collect() {
        const f = await readConsistency();
        if (f) this.set(f.finishedAt.getTime() / 1000);
      },
    })),
    consistencyHeals: once(registry, 'billing_consistency_heals_total', () => new Counter({
      name: 'billing_consistency_heals_total', help: 'Drifted Redis counters rebuilt from the ledger by the consistency check', labelNames: ['kind'], registers,
    })),
    consistencyRebuilds: once(registry, 'billing_consistency_rebuilds_total', () => new Counter({
      name: 'billing_consistency_rebuilds_total', help: 'Missing Redis counters warmed from the ledger by the consistency check (lost, not drifted)', labelNames: ['kind'], registers,
    })),
    consistencyRuns: once(registry, 'billing_consistency_runs_total', () => new Counter({
      name: 'billing_consistency_runs_total', help: 'Consistency check runs by status (ok, drift, failed)', labelNames: ['status'], registers,
    })),
    // Transaction-aware dispatch (M5): src/dispatch/dispatcher.ts.
    dispatchSent: once(registry, 'billing_dispatch_sent_total', () => new Counter({
      name: 'billing_dispatch_sent_total', help: 'Follow-up tasks sent after commit or by the outbox drain, by kind and result (started now, or duplicate: Temporal already had it)', labelNames: ['kind', 'result'], registers,
    })),
    dispatchFailures: once(registry, 'billing_dispatch_failures_total', () => new Counter({
      name: 'billing_dispatch_failures_total', help: 'Workflow starts of follow-up tasks that failed (the row stays in the outbox for the drain)', labelNames: ['kind'], registers,
    })),
    outboxDepth: once(registry, 'billing_dispatch_outbox_depth', () => new Gauge({
      name: 'billing_dispatch_outbox_depth', help: 'Follow-up tasks committed but not dispatched yet', registers,
      async collect() {
        if (opts.outbox) this.set((await readOutbox().catch(() => ({ depth: 0 }))).depth);
      },
    })),
    outboxOldestAge: once(registry, 'billing_dispatch_outbox_oldest_age_seconds', () => new Gauge({
      name: 'billing_dispatch_outbox_oldest_age_seconds', help: 'Age of the oldest undispatched follow-up task', registers,
      async collect() {
        if (opts.outbox) this.set((await readOutbox().catch(() => ({ oldestSeconds: 0 }))).oldestSeconds);
      },
    })),
    // Usage export: src/export/, docs/usage-export.md.
    usageExportSent: once(registry, 'billing_usage_export_sent_total', () => new Counter({
      name: 'billing_usage_export_sent_total', help: 'Usage entries sent to an export destination, by result (delivered, duplicate: the destination already had it, failed: stays due, held: past the dedupe window, not resent)', labelNames: ['destination', 'result'], registers,
    })),
    usageExportUndelivered: exportGauge('billing_usage_export_undelivered', 'Committed usage entries a destination has not acknowledged yet (held ones included)', (f) => f.undelivered),
    usageExportLag: exportGauge('billing_usage_export_lag_seconds', 'Age of the oldest committed usage entry a destination has not acknowledged (0: caught up)', (f) => f.lagSeconds),
    usageExportHeld: exportGauge('billing_usage_export_held', 'Usage entries held for reconciliation: sent, not acknowledged, past the destination dedupe window (Stripe 24 h)', (f) => f.held),
    usageExportReconciliationDifferences: exportGauge('billing_usage_export_reconciliation_differences', 'Differences (missing + unexpected + held) of the latest daily reconciliation of a destination with the ledger', (f) => f.reconciliationDifferences),
    // Budget alerts: src/alerts/.
    budgetAlertsRaised: once(registry, 'billing_budget_alerts_raised_total', () => new Counter({
      name: 'billing_budget_alerts_raised_total', help: 'Budget alerts raised (one per threshold crossing), by subject (tenant quota or api_key budget)', labelNames: ['subject'], registers,
    })),
    budgetAlertCheckFailures: once(registry, 'billing_budget_alert_check_failures_total', () => new Counter({
      name: 'billing_budget_alert_check_failures_total', help: 'Settlements whose threshold check failed (the next settlement checks again)', registers,
    })),
    budgetAlertDeliveries: once(registry, 'billing_budget_alert_deliveries_total', () => new Counter({
      name: 'billing_budget_alert_deliveries_total', help: 'Budget alerts by final outcome: delivered, or failed (given up or rejected)', labelNames: ['outcome'], registers,
    })),
    budgetAlertWebhookAttempts: once(registry, 'billing_budget_alert_webhook_attempts_total', () => new Counter({
      name: 'billing_budget_alert_webhook_attempts_total', help: 'Budget alert webhook POSTs by result (success, client_error: not retried, server_error and network_error: retried)', labelNames: ['result'], registers,
    })),
  };
}

export type BillingMetrics = ReturnType<typeof createBillingMetrics>;

/** The quota scripts runner's metrics (src/redis/scripts.ts); every runner on one registry shares them. */
export function createRedisScriptMetrics(registry: Registry) {
  const registers = [registry];
  return {
    duration: once(registry, 'billing_redis_script_duration_seconds', () => new Histogram({
      name: 'billing_redis_script_duration_seconds', help: 'Latency of one quota Lua script call, NOSCRIPT reload included', labelNames: ['script'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5], registers,
    })),
    reloads: once(registry, 'billing_redis_script_reloads_total', () => new Counter({
      name: 'billing_redis_script_reloads_total', help: 'Quota Lua scripts reloaded after a NOSCRIPT answer (script cache flushed or Redis restarted)', labelNames: ['script'], registers,
    })),
  };
}

/** The `task` label values of the maintenance metrics: the jobs of src/workflows/maintenance-jobs.ts. */
export const MAINTENANCE_TASKS = ['quota', 'apikey', 'consistency', 'sweep', 'outbox', 'export', 'export_reconcile'] as const;

/** The maintenance jobs' last successful start, per job (the sync_run table); read on scrape. */
export type LastSyncRuns = () => Promise<Partial<Record<string, Date>>>;

/**
 * Metrics of the scheduled maintenance jobs (quota and API-key sync, consistency check,
 * sweeper, outbox drain), labelled `task` (Prometheus keeps `job` for the scrape job). The lag is read from the sync_run table on scrape, so every
 * process (API or worker) reports the same figure, whichever worker ran the job.
 */
export function createMaintenanceMetrics(registry: Registry, opts: { lastRuns?: LastSyncRuns; now?: () => number } = {}) {
  const registers = [registry];
  const now = opts.now ?? Date.now;
  const runs = once(registry, 'billing_sync_runs_total', () => {
    const counter = new Counter({
      name: 'billing_sync_runs_total', help: 'Maintenance job runs (quota, apikey, consistency, sweep, outbox, export, export_reconcile) by outcome', labelNames: ['task', 'outcome'], registers,
    });
    // Exported from 0, so "no run in 30 minutes" is a zero increase that an alert sees, not a missing series.
    for (const task of MAINTENANCE_TASKS) for (const outcome of ['ok', 'error']) counter.inc({ task, outcome }, 0);
    return counter;
  });
  return {
    runs,
    duration: once(registry, 'billing_sync_duration_seconds', () => new Histogram({
      name: 'billing_sync_duration_seconds', help: 'Duration of one maintenance job run', labelNames: ['task'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300], registers,
    })),
    rowsWritten: once(registry, 'billing_sync_rows_written_total', () => new Counter({
      name: 'billing_sync_rows_written_total', help: 'Synced-table rows written by the quota and API-key syncs', labelNames: ['task'], registers,
    })),
    lag: once(registry, 'billing_sync_lag_seconds', () => new Gauge({
      name: 'billing_sync_lag_seconds', help: 'Age of the synced tables: seconds since the last successful sync run started (M4.4 wants < 300 for quota)', labelNames: ['task'], registers,
      async collect() {
        if (!opts.lastRuns) return;
        const last = await opts.lastRuns().catch(() => undefined);
        if (!last) return;
        for (const job of ['quota', 'apikey']) {
          const at = last[job];
          // Never synced: no figure rather than a made-up one (BillingSyncNotRunning covers it).
          if (at) this.set({ task: job }, Math.max(0, (now() - at.getTime()) / 1000));
        }
      },
    })),
  };
}

export type MaintenanceMetrics = ReturnType<typeof createMaintenanceMetrics>;

/** Metrics of the conversation lock (M7.3, src/locks/distributed-lock.ts); every lock on one registry shares them. */
export function createLockMetrics(registry: Registry) {
  const registers = [registry];
  return {
    wait: once(registry, 'billing_lock_wait_seconds', () => new Histogram({
      name: 'billing_lock_wait_seconds', help: 'Time from asking for a conversation lock to holding it (acquired) or giving up (timeout)', labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
    })),
    held: once(registry, 'billing_lock_held', () => new Gauge({
      name: 'billing_lock_held', help: 'Conversation locks this process holds now', registers,
    })),
    lost: once(registry, 'billing_lock_lost_total', () => new Counter({
      name: 'billing_lock_lost_total', help: 'Locks a holder lost while working (expired and taken, or released by an operator): its later writes are fenced off', registers,
    })),
  };
}

export type LockMetrics = ReturnType<typeof createLockMetrics>;
