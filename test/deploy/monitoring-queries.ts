/**
 * What the monitoring configs query, shared by the two monitoring tests:
 * - METRICS, the hand-written contract with the app's prom-client registries (types and
 *   label values; monitoring-contract.test.ts checks the rules and panels against it, and
 *   exported-metrics.test.ts checks it against what the running api and worker export);
 * - the PromQL expressions of deploy/prometheus/alerts.yml and of every panel target of
 *   deploy/grafana/dashboards/billing.json, and the metric names each one uses.
 *
 * The readers take parsed documents as well as the files, so a test can hand them a
 * doctored copy and see a check fail.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';

export const ROOT = path.resolve(__dirname, '../..');
export const ALERTS_FILE = 'deploy/prometheus/alerts.yml';
export const DASHBOARD_FILE = 'deploy/grafana/dashboards/billing.json';

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** Label name -> its allowed values, or null where values are open (model names, routes). */
export type LabelValues = Record<string, readonly string[] | null>;
export interface MetricSpec { type: MetricType; labels: LabelValues }

const ADMISSION_OUTCOMES = ['admitted', 'insufficient_quota', 'budget_exceeded', 'duplicate', 'error'] as const;
/** Why the api refused a request before any workflow started (issue 7, admission at the edge). */
const EDGE_REFUSAL_REASONS = ['insufficient_quota', 'budget_exceeded', 'rate_limit_requests', 'rate_limit_tokens', 'parallel_requests'] as const;
/** The scheduled maintenance jobs (src/workflows/maintenance-jobs.ts), the `task` label of their metrics. */
const MAINTENANCE_JOBS = ['quota', 'apikey', 'consistency', 'sweep', 'outbox', 'export', 'export_reconcile'] as const;
/** The usage-export destinations (src/export/destinations.ts), the `destination` label. */
const EXPORT_DESTINATIONS = ['openmeter', 'lago', 'stripe', 'webhook'] as const;
const SYNC_JOBS = ['quota', 'apikey'] as const;
/** What the consistency check compares (M4.3): a tenant's quota counter, an API key's budget counter. */
const CONSISTENCY_KINDS = ['tenant', 'api_key'] as const;

/**
 * Every billing metric the api and the worker export (src/metrics.ts, src/redis/scripts.ts):
 * rename one there and here together. exported-metrics.test.ts fails when this list and
 * the scraped /metrics disagree, so planned metrics (sync, consistency, locks) join it
 * only with the code that exports them.
 */
export const METRICS: Record<string, MetricSpec> = {
  billing_admission_duration_seconds: { type: 'histogram', labels: { outcome: ADMISSION_OUTCOMES } },
  billing_admission_total: { type: 'counter', labels: { outcome: ADMISSION_OUTCOMES, path: ['redis', 'postgres'] } },
  billing_settlement_duration_seconds: { type: 'histogram', labels: {} },
  billing_settlement_total: {
    type: 'counter',
    labels: { outcome: ['committed', 'voided', 'failed'], token_source: ['upstream', 'tiktoken', 'estimate'] },
  },
  billing_cost_micros_total: { type: 'counter', labels: { model: null } },
  billing_overage_micros_total: { type: 'counter', labels: {} },
  billing_upstream_duration_seconds: { type: 'histogram', labels: { model: null, outcome: ['ok', 'error', 'timeout', 'cancelled'] } },
  billing_upstream_ttfb_seconds: { type: 'histogram', labels: {} },
  billing_upstream_tokens_total: { type: 'counter', labels: { model: null, kind: ['prompt', 'completion'] } },
  http_request_duration_seconds: { type: 'histogram', labels: { method: null, route: null, status: null } },
  billing_edge_refusals_total: { type: 'counter', labels: { reason: EDGE_REFUSAL_REASONS } },
  billing_shed_requests_total: { type: 'counter', labels: {} },
  billing_inflight_requests: { type: 'gauge', labels: {} },
  billing_inflight_limit: { type: 'gauge', labels: {} },
  billing_redis_fallback_active: { type: 'gauge', labels: {} },
  billing_redis_script_duration_seconds: { type: 'histogram', labels: { script: null } },
  billing_redis_script_reloads_total: { type: 'counter', labels: { script: null } },
  billing_pending_reservations: { type: 'gauge', labels: {} },
  billing_pending_oldest_age_seconds: { type: 'gauge', labels: {} },
  billing_swept_reservations_total: { type: 'counter', labels: { outcome: ['committed', 'voided', 'still_running', 'error'] } },
  billing_channel_failures_total: { type: 'counter', labels: { channel: null } },
  billing_channel_cooldowns_total: { type: 'counter', labels: { channel: null } },
  billing_lock_wait_seconds: { type: 'histogram', labels: { outcome: ['acquired', 'timeout'] } },
  billing_lock_held: { type: 'gauge', labels: {} },
  billing_lock_lost_total: { type: 'counter', labels: {} },
  billing_sync_runs_total: { type: 'counter', labels: { task: MAINTENANCE_JOBS, outcome: ['ok', 'error'] } },
  billing_sync_duration_seconds: { type: 'histogram', labels: { task: MAINTENANCE_JOBS } },
  billing_sync_rows_written_total: { type: 'counter', labels: { task: SYNC_JOBS } },
  billing_sync_lag_seconds: { type: 'gauge', labels: { task: SYNC_JOBS } },
  billing_consistency_drift_micros: { type: 'gauge', labels: { kind: CONSISTENCY_KINDS } },
  billing_consistency_synced_drift_micros: { type: 'gauge', labels: { kind: CONSISTENCY_KINDS } },
  billing_consistency_drifted_subjects: { type: 'gauge', labels: { kind: CONSISTENCY_KINDS } },
  billing_consistency_busy_subjects: { type: 'gauge', labels: {} },
  billing_consistency_drift_threshold_micros: { type: 'gauge', labels: {} },
  billing_consistency_last_run_timestamp_seconds: { type: 'gauge', labels: {} },
  billing_consistency_heals_total: { type: 'counter', labels: { kind: CONSISTENCY_KINDS } },
  billing_consistency_rebuilds_total: { type: 'counter', labels: { kind: CONSISTENCY_KINDS } },
  billing_consistency_runs_total: { type: 'counter', labels: { status: ['ok', 'drift', 'failed'] } },
  billing_dispatch_sent_total: { type: 'counter', labels: { kind: ['budgetAlert'], result: ['started', 'duplicate'] } },
  billing_dispatch_failures_total: { type: 'counter', labels: { kind: ['budgetAlert'] } },
  billing_dispatch_outbox_depth: { type: 'gauge', labels: {} },
  billing_dispatch_outbox_oldest_age_seconds: { type: 'gauge', labels: {} },
  billing_budget_alerts_raised_total: { type: 'counter', labels: { subject: ['tenant', 'api_key'] } },
  billing_budget_alert_check_failures_total: { type: 'counter', labels: {} },
  billing_budget_alert_deliveries_total: { type: 'counter', labels: { outcome: ['delivered', 'failed'] } },
  billing_budget_alert_webhook_attempts_total: { type: 'counter', labels: { result: ['success', 'client_error', 'server_error', 'network_error'] } },
  billing_usage_export_sent_total: { type: 'counter', labels: { destination: EXPORT_DESTINATIONS, result: ['delivered', 'duplicate', 'failed', 'held'] } },
  billing_usage_export_undelivered: { type: 'gauge', labels: { destination: EXPORT_DESTINATIONS } },
  billing_usage_export_lag_seconds: { type: 'gauge', labels: { destination: EXPORT_DESTINATIONS } },
  billing_usage_export_held: { type: 'gauge', labels: { destination: EXPORT_DESTINATIONS } },
  billing_usage_export_reconciliation_differences: { type: 'gauge', labels: { destination: EXPORT_DESTINATIONS } },
};

/**
 * Series Prometheus itself produces for every scrape target, usable next to the app's.
 * The only names a rule or panel may use without the app exporting them.
 */
export const SCRAPE_METRICS: Record<string, MetricSpec> = {
  up: { type: 'gauge', labels: { job: ['billing-api', 'billing-worker', 'temporal', 'alertmanager', 'prometheus'] } },
};

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/** Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations. */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of stripped.matchAll(/(?<![\w.$])[a-zA-Z_:][\w:]*/g)) {
    const after = stripped.slice((m.index ?? 0) + m[0].length);
    if (/^\s*\(/.test(after) || PROMQL_KEYWORDS.has(m[0])) continue;
    names.push(m[0]);
  }
  return names;
}

/** One PromQL expression of a config, with where it sits (for failure messages). */
export interface Query { where: string; expr: string }

// Only what locating the expressions needs; monitoring-contract.test.ts validates the full shapes.
const alertsSchema = z.object({
  groups: z.array(z.object({ rules: z.array(z.object({ alert: z.string(), expr: z.string() }).passthrough()) }).passthrough()),
}).passthrough();
const panelSchema = z.object({
  id: z.number(),
  title: z.string(),
  targets: z.array(z.object({ refId: z.string(), expr: z.string() }).passthrough()).optional(),
}).passthrough();
// A collapsed row carries its panels inside it (one level deep in Grafana's model).
const dashboardSchema = z.object({
  panels: z.array(panelSchema.extend({ panels: z.array(panelSchema).optional() })),
  templating: z.object({ list: z.array(z.object({ name: z.string(), definition: z.string().optional() }).passthrough()) }).passthrough(),
}).passthrough();

export type AlertsDocument = z.infer<typeof alertsSchema>;
export type DashboardDocument = z.infer<typeof dashboardSchema>;

export function readAlertsDocument(): AlertsDocument {
  return alertsSchema.parse(yaml.load(readFileSync(path.join(ROOT, ALERTS_FILE), 'utf8')));
}

export function readDashboardDocument(): DashboardDocument {
  return dashboardSchema.parse(JSON.parse(readFileSync(path.join(ROOT, DASHBOARD_FILE), 'utf8')));
}

/** The expression of every alert rule. */
export function alertQueries(doc: AlertsDocument = readAlertsDocument()): Query[] {
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
}

/**
 * The expression of every target of every panel, those inside collapsed rows included,
 * and the series selector of every `label_values(selector, label)` variable (its label
 * argument is no metric, so the selector alone stands for the variable).
 */
export function dashboardQueries(doc: DashboardDocument = readDashboardDocument()): Query[] {
  const targets = doc.panels.flatMap((p) => [p, ...(p.panels ?? [])]).flatMap((p) =>
    (p.targets ?? []).map((t) => ({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr })));
  const variables = doc.templating.list.flatMap((v) => {
    const selector = /^\s*label_values\(\s*([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s*,/.exec(v.definition ?? '')?.[1];
    return selector ? [{ where: `variable ${v.name}`, expr: selector }] : [];
  });
  return [...targets, ...variables];
}
