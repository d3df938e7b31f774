/**
 * Monitoring contract (M1.4, M13): the alert rules and the Grafana dashboard query
 * metrics with their real types and label values, and together they cover the anomalies
 * and key figures of the billing system. Needs no services.
 *
 * METRICS (monitoring-queries.ts) is the contract with the app's prom-client registries;
 * exported-metrics.test.ts checks it, and every name the configs use, against what the
 * running api and worker export.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';
import { ALERTS_FILE, DASHBOARD_FILE, METRICS, ROOT, SCRAPE_METRICS, metricNames, type MetricSpec } from './monitoring-queries';

const TARGET_LABELS = ['job', 'instance'];

interface SeriesRef { name: string; spec: MetricSpec; base: string; suffix: '' | '_bucket' | '_sum' | '_count' }

/** Maps a series name to its metric; histogram series carry their suffix. Throws for unknown names. */
function resolveSeries(name: string): SeriesRef {
  const direct = METRICS[name] ?? SCRAPE_METRICS[name];
  if (direct) return { name, spec: direct, base: name, suffix: '' };
  const match = /^(.*)(_bucket|_sum|_count)$/.exec(name);
  const base = match?.[1] ?? '';
  const spec = METRICS[base];
  if (match && spec?.type === 'histogram') return { name, spec, base, suffix: match[2] as SeriesRef['suffix'] };
  throw new Error(`unknown metric "${name}"`);
}

/** Everything wrong with one expression against the contract; [] when it is sound. */
function contractViolations(expr: string): string[] {
  const problems: string[] = [];
  const refs: SeriesRef[] = [];
  for (const name of metricNames(expr)) {
    try { refs.push(resolveSeries(name)); } catch (e) { problems.push((e as Error).message); }
  }
  if (refs.length === 0) problems.push('no metric');
  for (const ref of refs) {
    if (ref.spec.type === 'histogram' && ref.suffix === '') problems.push(`histogram ${ref.name} needs _bucket/_sum/_count`);
  }
  for (const m of expr.matchAll(/\b(rate|irate|increase)\(\s*([a-zA-Z_:][\w:]*)/g)) {
    const ref = refs.find((r) => r.name === m[2]);
    if (ref && ref.spec.type === 'gauge') problems.push(`${m[1]}() of gauge ${ref.name}`);
  }
  if (refs.some((r) => r.suffix === '_bucket') !== expr.includes('histogram_quantile(')) {
    problems.push('_bucket series and histogram_quantile must go together');
  }
  for (const m of expr.matchAll(/([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}/g)) {
    const ref = refs.find((r) => r.name === m[1]);
    if (!ref) continue;
    for (const [, label = '', op = '', value = ''] of (m[2] ?? '').matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
      const allowed = ref.spec.labels[label];
      if (allowed === undefined && !TARGET_LABELS.includes(label)) { problems.push(`${ref.base} has no label ${label}`); continue; }
      if (!allowed || value.includes('$') || (op.includes('~') && !/^[\w|-]+$/.test(value))) continue;
      for (const v of value.split('|')) if (!allowed.includes(v)) problems.push(`${ref.base}{${label}} has no value "${v}"`);
    }
  }
  for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
    for (const label of (m[1] ?? '').split(',').map((l) => l.trim())) {
      const known = label === 'le' || TARGET_LABELS.includes(label) || refs.some((r) => label in r.spec.labels);
      if (!known) problems.push(`grouping by unknown label ${label}`);
    }
  }
  return problems;
}

function readYaml<T>(relativePath: string, schema: z.ZodType<T>): T {
  return schema.parse(yaml.load(readFileSync(path.join(ROOT, relativePath), 'utf8')));
}

describe('PromQL contract checker (test of the test)', () => {
  it('accepts sound expressions and names each kind of mistake', () => {
    expect(contractViolations('histogram_quantile(0.99, sum by (le) (rate(billing_settlement_duration_seconds_bucket[5m]))) > 0.1')).toEqual([]);
    expect(contractViolations('sum(rate(billing_admision_total[5m]))')).toEqual(['unknown metric "billing_admision_total"', 'no metric']);
    expect(contractViolations('rate(billing_pending_reservations[5m])')).toEqual(['rate() of gauge billing_pending_reservations']);
    expect(contractViolations('billing_admission_total{outcome="denied"}')).toEqual(['billing_admission_total{outcome} has no value "denied"']);
    expect(contractViolations('sum by (tenant) (billing_pending_reservations)')).toEqual(['grouping by unknown label tenant']);
    expect(contractViolations('rate(billing_settlement_duration_seconds[5m])')).toEqual(['histogram billing_settlement_duration_seconds needs _bucket/_sum/_count']);
  });
});

const Severity = { critical: 'critical', warning: 'warning', info: 'info' } as const;
const COMPONENTS = ['admission', 'upstream', 'settlement', 'redis', 'sync', 'consistency', 'availability', 'dispatch', 'webhooks', 'locks', 'usage-export'] as const;
const ruleSchema = z.object({
  alert: z.string().regex(/^Billing[A-Za-z]+$/),
  expr: z.string().min(1),
  for: z.string().regex(/^\d+[smh]$/),
  labels: z.object({ severity: z.nativeEnum(Severity), component: z.enum(COMPONENTS) }).strict(),
  annotations: z.object({ summary: z.string().min(10), description: z.string().min(40) }).strict(),
}).strict();
const alertsSchema = z.object({ groups: z.array(z.object({ name: z.string(), rules: z.array(ruleSchema).min(1) }).strict()) }).strict();
type Rule = z.infer<typeof ruleSchema>;

describe('deploy/prometheus/alerts.yml (M13 complete AlertManager rules)', () => {
  const { groups } = readYaml(ALERTS_FILE, alertsSchema);
  const rules = groups.flatMap((g) => g.rules);
  const byName = new Map(rules.map((r) => [r.alert, r]));
  const rule = (name: string): Rule => {
    const found = byName.get(name);
    if (!found) throw new Error(`alerts.yml has no alert ${name}`);
    return found;
  };
  const oneLine = (expr: string): string => expr.replace(/\s+/g, ' ').trim();

  it('gives every rule an expr, a severity, a component, a summary and a description, under a unique name', () => {
    expect(rules.length).toBeGreaterThanOrEqual(15);
    expect(byName.size).toBe(rules.length);
    expect(new Set(groups.map((g) => g.name)).size).toBe(groups.length);
  });

  it('queries only metrics and label values that the app exposes', () => {
    const problems = rules.map((r) => ({ alert: r.alert, problems: contractViolations(r.expr) }));
    expect(problems.filter((r) => r.problems.length > 0)).toEqual([]);
  });

  // absent() of an app metric fires for as long as nothing has exported a sample of it
  // (a labelled counter that never counted, a feature not deployed): an alert that never
  // resolves. Only Prometheus' own `up` is there for every target that is scraped.
  it('uses absent() and absent_over_time() only on up', () => {
    const absentOf = rules.flatMap((r) => [...r.expr.matchAll(/\babsent(?:_over_time)?\(\s*([a-zA-Z_:][\w:]*)/g)]
      .map((m) => `${r.alert}: ${m[1]}`));
    expect(absentOf.filter((a) => !a.endsWith(': up'))).toEqual([]);
  });

  it.each([
    // [alert, severity, for, piece of the expression, threshold it ends with]
    ['BillingAdmissionLatencyHigh', 'warning', '5m', 'histogram_quantile(0.99, sum by (le) (rate(billing_admission_duration_seconds_bucket[5m])))', '> 0.05'],
    ['BillingAdmissionErrorRateHigh', 'critical', '5m', 'billing_admission_total{outcome="error"}', '> 0.01'],
    ['BillingUpstreamErrorRateHigh', 'warning', '5m', 'billing_upstream_duration_seconds_count{outcome=~"error|timeout"}', '> 0.05'],
    ['BillingSettlementFailures', 'critical', '5m', 'increase(billing_settlement_total{outcome="failed"}[10m])', '> 0'],
    ['BillingRedisFallbackActive', 'critical', '1m', 'max(billing_redis_fallback_active)', '> 0'],
    ['BillingPendingReservationStale', 'warning', '1m', 'max(billing_pending_oldest_age_seconds)', '> 1800'],
    ['BillingPendingReservationStuck', 'critical', '5m', 'max(billing_pending_oldest_age_seconds)', '> 3600'],
    ['BillingSweeperErrors', 'warning', '20m', 'increase(billing_swept_reservations_total{outcome="error"}[15m])', '> 0'],
    ['BillingRedisScriptsReloaded', 'info', '0m', 'increase(billing_redis_script_reloads_total[10m])', '> 0'],
    ['BillingTargetDown', 'critical', '1m', 'up{job=~"billing-api|billing-worker|temporal"} == 0', 'absent(up{job="billing-worker"})'],
    ['BillingDispatchOutboxBacklog', 'warning', '5m', 'max(billing_dispatch_outbox_oldest_age_seconds)', '> 300'],
    ['BillingDispatchOutboxStuck', 'critical', '5m', 'max(billing_dispatch_outbox_oldest_age_seconds)', '> 3600'],
    ['BillingBudgetAlertDeliveryFailed', 'warning', '0m', 'billing_budget_alert_deliveries_total{outcome="failed"}', '> 0'],
    ['BillingBudgetAlertCheckFailing', 'warning', '10m', 'increase(billing_budget_alert_check_failures_total[10m])', '> 0'],
  ])('alerts on %s (%s, for %s)', (name, severity, forDuration, piece, ending) => {
    const found = rule(name);
    expect([found.labels.severity, found.for]).toEqual([severity, forDuration]);
    expect(oneLine(found.expr)).toContain(piece);
    expect(oneLine(found.expr).endsWith(ending)).toBe(true);
  });

  const alertmanagerSchema = z.object({
    route: z.object({ receiver: z.string(), routes: z.array(z.object({ receiver: z.string(), matchers: z.array(z.string()) }).passthrough()) }).passthrough(),
    receivers: z.array(z.object({ name: z.string() }).passthrough()),
    inhibit_rules: z.array(z.object({
      source_matchers: z.array(z.string()).min(1), target_matchers: z.array(z.string()).min(1), equal: z.array(z.string()).optional(),
    }).strict()).min(1),
  }).passthrough();
  const alertmanager = readYaml('deploy/alertmanager/alertmanager.yml', alertmanagerSchema);

  it('routes every severity the rules use to a receiver that exists (alertmanager.yml)', () => {
    const receivers = new Set(alertmanager.receivers.map((r) => r.name));
    expect(receivers.size).toBe(alertmanager.receivers.length);
    expect(receivers.has(alertmanager.route.receiver)).toBe(true);
    const routed = alertmanager.route.routes.map((r) => [r.matchers, receivers.has(r.receiver)]);
    const severities = [...new Set(rules.map((r) => r.labels.severity))].sort();
    expect(severities).toEqual(['critical', 'info', 'warning']);
    expect(routed).toEqual(expect.arrayContaining(severities.map((s) => [[`severity="${s}"`], true])));
    expect(alertmanager.route.routes.find((r) => r.matchers[0] === 'severity="critical"')?.receiver).toBe('billing-ops-critical');
  });

  it('inhibits only by alert names, labels and values that the rules carry', () => {
    const matchers = alertmanager.inhibit_rules.flatMap((r) => [...r.source_matchers, ...r.target_matchers]);
    const problems: string[] = [];
    for (const matcher of matchers) {
      const [, label = '', value = ''] = /^(\w+)=~?"([^"]*)"$/.exec(matcher) ?? [];
      const values = value.split('|');
      if (label === 'alertname') problems.push(...values.filter((v) => !byName.has(v)));
      else if (label === 'severity') problems.push(...values.filter((v) => !(v in Severity)));
      else if (label === 'component') problems.push(...values.filter((v) => !(COMPONENTS as readonly string[]).includes(v)));
      else if (label === 'job') problems.push(...values.filter((v) => !SCRAPE_METRICS.up!.labels.job!.includes(v)));
      else problems.push(matcher);
    }
    expect(problems).toEqual([]);
    for (const rule of alertmanager.inhibit_rules) {
      for (const label of rule.equal ?? []) expect(rules.every((r) => label in r.labels)).toBe(true);
    }
  });
});

const targetSchema = z.object({ refId: z.string(), expr: z.string().min(1), datasource: z.object({ uid: z.string() }) }).passthrough();
const gridPosSchema = z.object({ h: z.number().int().min(1), w: z.number().int().min(1).max(24), x: z.number().int().min(0), y: z.number().int().min(0) });
const panelSchema = z.object({
  id: z.number().int(),
  type: z.string(),
  title: z.string().min(1),
  gridPos: gridPosSchema,
  datasource: z.object({ type: z.string(), uid: z.string() }).optional(),
  targets: z.array(targetSchema).optional(),
  panels: z.array(z.object({ id: z.number().int() }).passthrough()).optional(),
}).passthrough();
const dashboardSchema = z.object({
  uid: z.string().min(1),
  title: z.string().min(1),
  schemaVersion: z.number().int(),
  panels: z.array(panelSchema),
  templating: z.object({ list: z.array(z.object({ name: z.string(), definition: z.string() }).passthrough()) }),
}).passthrough();

describe('deploy/grafana/dashboards/billing.json (M13 complete Grafana dashboard)', () => {
  const dashboard = dashboardSchema.parse(JSON.parse(readFileSync(path.join(ROOT, DASHBOARD_FILE), 'utf8')));
  const panels = dashboard.panels;
  const charts = panels.filter((p) => p.type !== 'row');
  const exprs = charts.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

  it('is a provisionable dashboard with unique panel ids', () => {
    expect([dashboard.uid, dashboard.schemaVersion]).toEqual(['billing-overview', 39]);
    const ids = [...panels.map((p) => p.id), ...panels.flatMap((p) => (p.panels ?? []).map((n) => n.id))];
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('has the rows Admission, Upstream, Settlement & money, Redis/fallback, Sync & consistency, Dispatch & budget alerts, Locks, Usage export, HTTP', () => {
    expect(panels.filter((p) => p.type === 'row').map((p) => p.title)).toEqual([
      'Admission', 'Upstream', 'Settlement & money', 'Redis/fallback', 'Sync & consistency', 'Dispatch & budget alerts', 'Locks', 'Usage export', 'HTTP',
    ]);
  });

  it('lays panels out inside 24 columns without overlaps', () => {
    const taken = new Map<string, number>();
    const overlaps: string[] = [];
    for (const { id, gridPos: g } of panels) {
      expect({ id, fits: g.x + g.w <= 24 }).toEqual({ id, fits: true });
      for (let row = g.y; row < g.y + g.h; row++) {
        for (let col = g.x; col < g.x + g.w; col++) {
          const other = taken.get(`${row}:${col}`);
          if (other !== undefined) overlaps.push(`${id} overlaps ${other}`);
          taken.set(`${row}:${col}`, id);
        }
      }
    }
    expect([...new Set(overlaps)]).toEqual([]);
  });

  it('queries the provisioned Prometheus from every chart, with unique refIds', () => {
    expect(charts.length).toBeGreaterThanOrEqual(25);
    for (const chart of charts) {
      const refIds = (chart.targets ?? []).map((t) => t.refId);
      expect({ id: chart.id, datasource: chart.datasource?.uid, hasTargets: refIds.length > 0, uniqueRefIds: new Set(refIds).size === refIds.length })
        .toEqual({ id: chart.id, datasource: 'prometheus', hasTargets: true, uniqueRefIds: true });
      expect((chart.targets ?? []).filter((t) => t.datasource.uid !== 'prometheus')).toEqual([]);
    }
  });

  it('queries only metrics and label values that the app exposes', () => {
    const problems = exprs.map((expr) => ({ expr, problems: contractViolations(expr) }));
    expect(problems.filter((e) => e.problems.length > 0)).toEqual([]);
  });

  it('shows every metric of the contract (a key figure without a panel is invisible)', () => {
    const shown = new Set(exprs.flatMap((e) => metricNames(e).map((n) => resolveSeries(n).base)));
    expect(Object.keys(METRICS).filter((m) => !shown.has(m))).toEqual([]);
  });

  it('shows P50 and P99 of every histogram', () => {
    const histograms = Object.entries(METRICS).filter(([, s]) => s.type === 'histogram').map(([name]) => name);
    const missing = histograms.flatMap((h) => ['0.5', '0.99'].map((q) => [h, q] as const))
      .filter(([h, q]) => !exprs.some((e) => e.startsWith(`histogram_quantile(${q},`) && e.includes(`${h}_bucket`)))
      .map(([h, q]) => `${h} P${Number(q) * 100}`);
    expect(missing).toEqual([]);
  });

  it('offers a model variable from a metric label that exists', () => {
    expect(dashboard.templating.list.map((v) => [v.name, v.definition])).toEqual([
      ['model', 'label_values(billing_upstream_tokens_total, model)'],
    ]);
    expect(METRICS.billing_upstream_tokens_total?.labels).toHaveProperty('model');
  });
});
