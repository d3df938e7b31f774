/** The soak's printed figures: requests by outcome, faults by kind with recovery times, drift, invariants. */
import { printTable } from '../lib/table';
import { outcomeOf } from './load';
import type { ChaosResult } from './run';

export function printChaosReport(result: ChaosResult): void {
  const { options, records, faults } = result;
  console.log(`\nchaos soak (${options.topology} topology): seed ${options.seed}, ${records.length} requests (${records.filter((r) => r.kind === 'probe').length} probes), concurrency ${options.concurrency}, load ${result.loadSeconds.toFixed(1)} s, quiescence + maintenance ${result.quiesceSeconds.toFixed(1)} s\n`);
  const outcomes = new Map<string, number>();
  for (const r of records) outcomes.set(outcomeOf(r), (outcomes.get(outcomeOf(r)) ?? 0) + 1);
  printTable(['requests by outcome', 'count'], [...outcomes].sort((a, b) => b[1] - a[1]).map(([o, n]) => [o, String(n)]));
  const kinds = new Map<string, number>();
  for (const r of records) kinds.set(r.kind, (kinds.get(r.kind) ?? 0) + 1);
  console.log('');
  printTable(['requests by kind', 'count', 'failed over to the other API', 'retried after 502/503'], [...kinds].map(([k, n]) => [k, String(n), String(records.filter((r) => r.kind === k && r.failedOver).length), String(records.filter((r) => r.kind === k && r.retries > 0).length)]));
  console.log('');
  printTable(['fault', 'target', 'at request', 'recovery ms', 'failed probes', 'error'],
    faults.map((f) => [f.kind, f.target, String(f.atRequest), String(f.recoveryMs), String(f.failedProbes), f.error ?? '']));
  const byKind = new Map<string, number[]>();
  for (const f of faults) byKind.set(f.kind, [...(byKind.get(f.kind) ?? []), f.recoveryMs]);
  console.log('');
  printTable(['faults by kind', 'injected', 'max recovery ms'], [...byKind].map(([k, ms]) => [k, String(ms.length), String(Math.max(...ms))]));
  const c = result.consistency;
  console.log(`\ndrift found by the consistency check after quiescence: status ${c?.status ?? '?'}, tenant drift ${c?.tenant_drift_micros ?? '?'} micros, key drift ${c?.apikey_drift_micros ?? '?'} micros, ${c?.drifted.length ?? '?'} drifted, healed ${String(c?.healed ?? '?')}\n`);
  printTable(['invariant', 'checked', 'violations'], result.invariants.map((i) => [i.name, String(i.checked), String(i.violations.length)]));
  if (result.violations.length > 0) {
    console.log(`\n${result.violations.length} VIOLATIONS (first 40):`);
    for (const v of result.violations.slice(0, 40)) console.log(`  - ${v}`);
  } else {
    console.log('\nall invariants hold');
  }
}
