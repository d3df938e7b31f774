/**
 * Monitoring names only what exists (issue 6): every metric that an alert rule
 * (deploy/prometheus/alerts.yml) or a dashboard panel or variable
 * (deploy/grafana/dashboards/billing.json) queries is exported by the running app.
 * The real roles start as docker-compose runs them (`tsx src/main.ts api` and
 * `worker`, one process each) on the services global setup started; both /metrics
 * endpoints are scraped over HTTP, and the exported names are read from their
 * `# TYPE` lines. A rule on a metric nothing exports never fires (or, under
 * absent(), fires forever); a panel on one stays empty.
 *
 * The hand-written METRICS contract that monitoring-contract.test.ts checks label
 * values against must equal what the roles export, so it cannot drift either.
 */
import { startRole, type RoleProcess } from '../helpers/role-process';
import { uniqueId } from '../helpers/services';
import {
  METRICS,
  SCRAPE_METRICS,
  alertQueries,
  dashboardQueries,
  metricNames,
  readAlertsDocument,
  readDashboardDocument,
  type Query,
} from './monitoring-queries';

/** Metric name -> type (counter, gauge, histogram, summary, untyped), from the `# TYPE` lines of a text exposition. */
function exportedTypes(exposition: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const [, name = '', type = ''] of exposition.matchAll(/^# TYPE ([a-zA-Z_:][\w:]*) (\w+)$/gm)) types.set(name, type);
  return types;
}

/**
 * The series names PromQL can select from those metrics: a histogram only as _bucket,
 * _sum and _count (its own name selects nothing), a summary as itself, _sum and _count.
 */
function seriesNames(types: ReadonlyMap<string, string>): Set<string> {
  const names = new Set<string>();
  for (const [name, type] of types) {
    const suffixes = type === 'histogram' ? ['_bucket', '_sum', '_count'] : type === 'summary' ? ['', '_sum', '_count'] : [''];
    for (const suffix of suffixes) names.add(name + suffix);
  }
  return names;
}

/** `where: name` for every metric a query selects that is neither exported nor one of Prometheus' own (SCRAPE_METRICS). */
function unexported(queries: readonly Query[], exported: ReadonlySet<string>): string[] {
  return queries.flatMap((q) => metricNames(q.expr)
    .filter((name) => !exported.has(name) && !(name in SCRAPE_METRICS))
    .map((name) => `${q.where}: ${name}`));
}

/**
 * prom-client's collectDefaultMetrics() (process CPU, memory, event loop, GC), which the
 * roles register unprefixed next to the billing metrics. Not part of the billing contract.
 */
const isDefaultMetric = (name: string): boolean => /^(process|nodejs)_/.test(name);

const EXPOSITION = [
  '# HELP a_seconds A histogram.',
  '# TYPE a_seconds histogram',
  'a_seconds_bucket{le="+Inf"} 0',
  '# TYPE b_total counter',
  '# TYPE c gauge',
  'c 1',
  '# TYPE d_seconds summary',
].join('\n');

describe('the exported-metrics check (test of the test)', () => {
  const exported = seriesNames(exportedTypes(EXPOSITION));

  it('reads the series each # TYPE line makes selectable', () => {
    expect([...exported].sort()).toEqual([
      'a_seconds_bucket', 'a_seconds_count', 'a_seconds_sum', 'b_total', 'c', 'd_seconds', 'd_seconds_count', 'd_seconds_sum',
    ]);
  });

  it("names each unexported metric of a query, and lets Prometheus' up pass", () => {
    expect(unexported([
      { where: 'ok', expr: 'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m]))) / sum(b_total{x="y"}) > c' },
      { where: 'up', expr: 'up{job="billing-api"} == 0 or absent(up{job="billing-worker"})' },
      { where: 'bad', expr: 'max(billing_sync_lag_seconds) > 300 or rate(a_seconds[5m]) > 0' },
    ], exported)).toEqual(['bad: billing_sync_lag_seconds', 'bad: a_seconds']);
  });
});

describe('alerts and dashboard against the /metrics of the running api and worker', () => {
  const taskQueue = uniqueId('exported-metrics');
  const roles: RoleProcess[] = [];
  /** Role -> metric name -> type. */
  const scraped = new Map<string, Map<string, string>>();
  let exported = new Set<string>();

  beforeAll(async () => {
    const started = await Promise.allSettled([startRole('api', { taskQueue }), startRole('worker', { taskQueue })]);
    for (const s of started) if (s.status === 'fulfilled') roles.push(s.value);
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    for (const role of roles) {
      const res = await fetch(role.metricsUrl);
      if (res.status !== 200) throw new Error(`${role.role} ${role.metricsUrl}: HTTP ${res.status}\n${role.output()}`);
      scraped.set(role.role, exportedTypes(await res.text()));
    }
    exported = seriesNames(new Map([...scraped.values()].flatMap((types) => [...types])));
  }, 120_000);

  afterAll(async () => {
    await Promise.all(roles.map((r) => r.stop()));
  }, 30_000);

  it('scrapes billing metrics from both roles', () => {
    for (const role of ['api', 'worker']) {
      const billing = [...(scraped.get(role)?.keys() ?? [])].filter((name) => name.startsWith('billing_'));
      expect({ role, exportsBilling: billing.length > 0 }).toEqual({ role, exportsBilling: true });
    }
  });

  it('alerts.yml queries only metrics the api or the worker exports', () => {
    expect(alertQueries().length).toBeGreaterThan(0);
    expect(unexported(alertQueries(), exported)).toEqual([]);
  });

  it('every dashboard panel and variable queries only metrics the api or the worker exports', () => {
    expect(dashboardQueries().length).toBeGreaterThan(0);
    expect(unexported(dashboardQueries(), exported)).toEqual([]);
  });

  it('fails on doctored copies of alerts.yml and the dashboard that query a metric nothing exports', () => {
    const alerts = readAlertsDocument();
    alerts.groups.push({ name: 'bogus', rules: [{ alert: 'BillingBogus', expr: 'sum(increase(billing_nonexistent_runs_total[15m])) == 0' }] });
    expect(unexported(alertQueries(alerts), exported)).toEqual([...unexported(alertQueries(), exported), 'alert BillingBogus: billing_nonexistent_runs_total']);

    const dashboard = readDashboardDocument();
    dashboard.panels.push({ id: 999, title: 'Bogus', targets: [
      { refId: 'A', expr: 'sum(billing_nonexistent_gauge)' },
      // A histogram's own name selects nothing: only its _bucket, _sum and _count series exist.
      { refId: 'B', expr: 'rate(billing_settlement_duration_seconds[5m])' },
    ] });
    expect(unexported(dashboardQueries(dashboard), exported)).toEqual([
      ...unexported(dashboardQueries(), exported),
      'panel 999 "Bogus" A: billing_nonexistent_gauge',
      'panel 999 "Bogus" B: billing_settlement_duration_seconds',
    ]);
  });

  it('the METRICS contract lists exactly the billing metrics the roles export, with their types', () => {
    const types = new Map<string, Set<string>>();
    for (const perRole of scraped.values()) {
      for (const [name, type] of perRole) if (!isDefaultMetric(name)) types.set(name, (types.get(name) ?? new Set()).add(type));
    }
    // One name, one type in both roles: Prometheus would merge their series under one name.
    const exportedContract = Object.fromEntries([...types].map(([name, t]) => [name, [...t].join('|')]));
    const handWritten = Object.fromEntries(Object.entries(METRICS).map(([name, spec]) => [name, spec.type]));
    expect(exportedContract).toEqual(handWritten);
  });
});
