/**
 * Tenant isolation benchmark (issue 7 item 8): how much one tenant's flood hurts another tenant,
 * the victim. bench/README.md explains every figure.
 *
 *   npx tsx bench/isolation.ts [--duration 10] [--victim-connections 1,5] [--flood-connections 50]
 *                              [--paying-connections 100] [--ramp 2] [--rpm-limit 60]
 *                              [--scenarios solo,healthz,refusal,rate-limited,paying] [--keep-data]
 *
 * The stack and the gateway start as in the gateway benchmark (bench/gateway/bench-stack.ts); the
 * flood runs from a child process of its own (bench/isolation/flood-child.ts), the victim's closed
 * loops from this one. Scenarios: the victim alone; 50 connections flooding GET /healthz (the
 * floor: the HTTP server itself); 50 connections of an out-of-quota tenant (429
 * insufficient_quota); 50 connections of a tenant whose key has rpm_limit 60 (429
 * rate_limit_exceeded; "not available" while the API refuses the field); 100 connections of a
 * paying tenant. The last runs with the server's fairness as started and, when the code has a
 * setting to turn it off (bench/isolation/fairness.ts), again on a restarted stack with it off.
 *
 * Exit code 1 when a target is missed or the run could not be set up.
 */
import os from 'node:os';
import { benchStack, type StartedBenchStack } from './gateway/bench-stack';
import { fairnessState } from './isolation/fairness';
import { startFloodProcess, type FloodProcess } from './isolation/flood';
import { parseIsolationOptions, ScenarioName } from './isolation/options';
import { judgeTargets, printIsolationReport, writeIsolationJson, type IsolationReport } from './isolation/report';
import { runScenarios, setupTenants, type FairnessLabel, type ScenarioResult } from './isolation/scenarios';
import { loadConfig } from '../src/config';

// Parsed before anything starts: an unknown flag fails at once, with nothing to clean up.
const options = parseIsolationOptions();

async function main(): Promise<void> {
  const loadAtStart = os.loadavg();
  const fairness = fairnessState(loadConfig());
  const label = (on: boolean | undefined): FairnessLabel => (on === undefined ? 'unknown' : on ? 'on' : 'off');
  let flood: FloodProcess | undefined;
  let bench = benchStack({ cpuProfile: false, keepData: options.keepData, prefix: 'billing-isolation-' });
  const cleanup = async (): Promise<void> => {
    await flood?.close().catch((err: unknown) => console.error('stopping the flood process failed:', err));
    await bench.stop();
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    flood = await startFloodProcess();
    const scenarios: ScenarioResult[] = [];
    const refusalProbes: IsolationReport['refusalProbes'] = [];
    const gatewayLogs: IsolationReport['gatewayLogs'] = [];
    let servicesNote = '';
    const pass = async (started: StartedBenchStack, names: ScenarioName[], fair: FairnessLabel): Promise<void> => {
      servicesNote = started.servicesNote;
      console.error(`stack and gateway ready in ${started.startedInS.toFixed(1)} s (${started.servicesNote}; fairness ${fair})`);
      const tenants = await setupTenants(started.gateway, started.adminToken, options);
      refusalProbes.push({ fairness: fair, ...tenants.refusalProbe });
      if (!flood) throw new Error('no flood process');
      scenarios.push(...await runScenarios({
        gw: started.gateway, flood, tenants, temporalAddress: started.stack.temporalAddress, namespace: started.config.TEMPORAL_NAMESPACE, fairness: fair,
      }, names, options));
      gatewayLogs.push(started.gateway.problems);
    };
    await pass(await bench.start(), options.scenarios, label(fairness.on));
    const notes = [fairness.note];
    if (options.scenarios.includes(ScenarioName.paying) && fairness.offEnv && fairness.on === true) {
      await bench.stop();
      bench = benchStack({ cpuProfile: false, keepData: options.keepData, prefix: 'billing-isolation-', env: fairness.offEnv });
      const offNames = options.scenarios.filter((n) => n === ScenarioName.solo || n === ScenarioName.paying);
      await pass(await bench.start(), offNames, 'off');
    } else if (options.scenarios.includes(ScenarioName.paying)) {
      notes.push('the paying flood was measured with the fairness setting above only');
    }
    const targets = judgeTargets(scenarios, options);
    const cpuModel = os.cpus()[0]?.model ?? 'unknown cpu';
    const header = `isolation benchmark: node ${process.version}, ${os.cpus().length} x ${cpuModel}, load avg ${loadAtStart.map((l) => l.toFixed(2)).join(' ')} at start, ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at end; ${servicesNote}`;
    const report: IsolationReport = { header, fairnessNotes: notes, refusalProbes, scenarios, targets, gatewayLogs };
    printIsolationReport(report);
    writeIsolationJson(report, options);
    if (targets.some((t) => t.result === 'FAIL')) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
