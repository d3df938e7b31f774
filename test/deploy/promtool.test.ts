/**
 * The alert rules under promtool (M13; issue 7's shedding alert): `promtool check rules`
 * accepts deploy/prometheus/alerts.yml, and `promtool test rules` passes the unit tests
 * in deploy/prometheus/alerts.test.yml, which feed the rules scraped-like series and
 * state which alerts fire: sustained shedding fires BillingLoadShedding, brief or no
 * shedding does not, and a healthy stack fires no rule at all. Needs no services, but
 * promtool, which setup installs (Debian's prometheus package): without it the suite fails.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import yaml from 'js-yaml';
import { z } from 'zod';
import { ALERTS_FILE, ROOT, readAlertsDocument } from './monitoring-queries';

const ALERTS_TEST_FILE = 'deploy/prometheus/alerts.test.yml';

interface Run { status: number | null; output: string }

function promtool(args: string[], cwd = ROOT): Run {
  const result = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 60_000 });
  if (result.error && (result.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('promtool is not on PATH: `npm run setup` installs it (Debian apt package prometheus, which ships /usr/bin/promtool)');
  }
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

const alertTestSchema = z.object({
  eval_time: z.string(),
  alertname: z.string(),
  exp_alerts: z.array(z.object({ exp_labels: z.record(z.string()).optional() }).passthrough()).optional(),
}).strict();
const testFileSchema = z.object({
  rule_files: z.array(z.string()),
  evaluation_interval: z.string().optional(),
  tests: z.array(z.object({
    name: z.string(),
    interval: z.string().optional(),
    input_series: z.array(z.object({ series: z.string(), values: z.string() }).strict()),
    alert_rule_test: z.array(alertTestSchema).optional(),
  }).strict()).min(1),
}).strict();

describe('deploy/prometheus/alerts.yml under promtool', () => {
  it('passes `promtool check rules`', () => {
    const run = promtool(['check', 'rules', ALERTS_FILE]);
    expect(run).toEqual({ status: 0, output: expect.stringContaining('SUCCESS') as string });
  });

  it('passes its unit tests: `promtool test rules deploy/prometheus/alerts.test.yml`', () => {
    const run = promtool(['test', 'rules', ALERTS_TEST_FILE]);
    expect(run).toEqual({ status: 0, output: expect.stringContaining('SUCCESS') as string });
  });

  describe('the unit tests cover what they claim', () => {
    const file = testFileSchema.parse(yaml.load(readFileSync(path.join(ROOT, ALERTS_TEST_FILE), 'utf8')));
    const test = (name: string) => {
      const found = file.tests.find((t) => t.name === name);
      if (!found) throw new Error(`${ALERTS_TEST_FILE} has no test "${name}"`);
      return found.alert_rule_test ?? [];
    };
    const firing = (checks: z.infer<typeof alertTestSchema>[]) => checks.filter((c) => (c.exp_alerts ?? []).length > 0);

    it('tests alerts.yml itself', () => {
      expect(file.rule_files).toEqual([path.basename(ALERTS_FILE)]);
    });

    it('checks every rule of alerts.yml on the healthy stack, expecting nothing to fire', () => {
      const rules = readAlertsDocument().groups.flatMap((g) => g.rules.map((r) => r.alert)).sort();
      const healthy = test('healthy stack fires nothing');
      expect(healthy.map((c) => c.alertname).sort()).toEqual(rules);
      expect(firing(healthy)).toEqual([]);
    });

    it('expects sustained shedding to fire BillingLoadShedding, and brief or no shedding not to', () => {
      const sustained = test('sustained shedding fires BillingLoadShedding');
      expect(firing(sustained).map((c) => [c.alertname, (c.exp_alerts ?? []).map((a) => a.exp_labels?.severity)]))
        .toEqual([['BillingLoadShedding', ['warning']]]);
      for (const name of ['brief shedding does not fire', 'no shedding fires nothing']) {
        const checks = test(name);
        expect({ name, alerts: [...new Set(checks.map((c) => c.alertname))], firing: firing(checks) })
          .toEqual({ name, alerts: ['BillingLoadShedding'], firing: [] });
      }
    });

    it('expects drift above the threshold to fire BillingConsistencyDrift for that kind, and an overdue check BillingConsistencyCheckStale', () => {
      const labels = (name: string) => firing(test(name)).map((c) => [c.alertname, (c.exp_alerts ?? []).map((a) => a.exp_labels?.kind ?? a.exp_labels?.severity)]);
      expect(labels('consistency drift above the threshold fires BillingConsistencyDrift')).toEqual([['BillingConsistencyDrift', ['tenant']]]);
      expect(labels('no completed consistency check for three hours fires BillingConsistencyCheckStale')).toEqual([['BillingConsistencyCheckStale', ['warning']]]);
      expect(labels('a stack that never completed a consistency check does not fire BillingConsistencyCheckStale')).toEqual([]);
    });
  });

  it('the unit tests can fail: they fail on a copy of alerts.yml whose shedding threshold is never reached', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'promtool-'));
    try {
      const rules = readFileSync(path.join(ROOT, ALERTS_FILE), 'utf8');
      const shedding = 'sum by (instance) (rate(billing_shed_requests_total[5m])) > 0';
      expect(rules).toContain(`expr: ${shedding}\n`);
      writeFileSync(path.join(dir, path.basename(ALERTS_FILE)), rules.replace(shedding, `${shedding.slice(0, -1)}1000`));
      copyFileSync(path.join(ROOT, ALERTS_TEST_FILE), path.join(dir, path.basename(ALERTS_TEST_FILE)));
      const run = promtool(['test', 'rules', path.basename(ALERTS_TEST_FILE)], dir);
      expect(run.status).not.toBe(0);
      expect(run.output).toContain('name: sustained shedding fires BillingLoadShedding');
      expect(run.output).toContain('alertname: BillingLoadShedding');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
