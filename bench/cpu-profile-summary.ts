/**
 * Summarises V8 `.cpuprofile` files (as `npm run bench:gateway -- --cpu-prof` writes them into
 * bench/results/): CPU time by origin (npm package, src/ directory, Node internals, the Temporal
 * workflow bundle, GC) and the top functions, so the gateway's profile and its Temporal floor's
 * can be compared without opening DevTools.
 *
 *   npx tsx bench/cpu-profile-summary.ts --results bench/results/gateway-<ts>.json --phase "gateway c=50" [--thread 0]
 *   npx tsx bench/cpu-profile-summary.ts [--top 25] [--per N] FILE.cpuprofile [FILE ...]
 *
 * With `--results` and `--phase` it takes every thread's profile of the process that ran that phase
 * (the file names carry the pid), keeps only the samples inside the phase's window (both clocks
 * are CLOCK_MONOTONIC) and divides by the phase's 2xx responses or floor workflows. Otherwise it
 * sums the given files over their whole length, divided by `--per` when given. `--thread N` keeps only
 * the profiles of Node thread N (the file name's fifth field: 0 is the main thread; the workflow
 * worker thread has a higher number).
 *
 * Self time of a native or WebAssembly frame (JSON.parse, socket writes, tiktoken's wasm) is
 * charged to the origin of the JavaScript frame that called it; the function table keeps the
 * frame's own name. A second table charges Node's internals too, to the nearest package or src/
 * frame above them (the code that asked for the work). "Inclusive" counts a sample once for
 * every origin on its stack. A V8 profile
 * only sees JavaScript threads: the Temporal core's Rust threads, libuv's pool and GC helper
 * threads burn CPU it never samples.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }
interface Window { fromUs: number; toUs: number }

const PSEUDO = new Set(['(root)', '(program)', '(idle)', '(garbage collector)']);

/** Where a frame's code comes from; undefined for native and wasm frames (charged to their caller). */
function ownOrigin(frame: CallFrame): string | undefined {
  const { url, functionName } = frame;
  if (url === '') return PSEUDO.has(functionName) ? functionName : undefined;
  if (url.startsWith('wasm:') || /^wasm\//.test(url)) return undefined;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg?.[1]) return pkg[1];
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/');
    return `node:${parts[0] === 'internal' ? parts.slice(0, 2).join('/').replace(/\.js$/, '') : (parts[0] ?? '')}`;
  }
  const own = /\/(src|bench)\/([^/]+)(?:\/|$)/.exec(url);
  if (own) return `${own[1]}/${own[2]?.replace(/\.(ts|js)$/, '')}`;
  // The Temporal SDK evaluates the webpack workflow bundle in a vm context.
  if (url.startsWith('evalmachine') || /workflow-bundle/.test(url)) return 'workflow bundle';
  return url.replace(/^file:\/\//, '').split('/').slice(-2).join('/');
}

function frameName(frame: CallFrame): string {
  const where = frame.url === '' ? ' [native]' : ` ${frame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(src|bench)\//, '$1/')}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${where}`;
}

interface Totals { self: Map<string, number>; owner: Map<string, number>; inclusive: Map<string, number>; functions: Map<string, number>; busyUs: number; sampledUs: number }

/** Origins that are code someone chose to run (a package, src/, bench/, the workflow bundle), as opposed to Node's internals. */
const isOwner = (origin: string): boolean => !origin.startsWith('node:') && !origin.startsWith('(');

function accumulate(totals: Totals, profile: CpuProfile, window: Window | undefined): void {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  interface Resolved { origin: string; owner: string; stack: Set<string> }
  const originCache = new Map<number, Resolved>();
  const resolve = (id: number): Resolved => {
    const cached = originCache.get(id);
    if (cached) return cached;
    const node = nodes.get(id);
    const up = parent.get(id);
    const above: Resolved = up === undefined ? { origin: '(native)', owner: '(node internals)', stack: new Set<string>() } : resolve(up);
    const own = node ? ownOrigin(node.callFrame) : undefined;
    const origin = own ?? (above.origin === '(root)' ? '(native)' : above.origin);
    const owner = own !== undefined && (isOwner(own) || own.startsWith('(')) && own !== '(root)' ? own : above.owner;
    const result = { origin, owner, stack: own ? new Set([...above.stack, own]) : above.stack };
    originCache.set(id, result);
    return result;
  };
  let t = profile.startTime;
  profile.samples.forEach((id, i) => {
    t += profile.timeDeltas[i] ?? 0;
    const dt = profile.timeDeltas[i + 1] ?? 0; // the time until the next sample belongs to this one
    if (window && (t < window.fromUs || t > window.toUs)) return;
    const node = nodes.get(id);
    if (!node) return;
    totals.sampledUs += dt;
    if (node.callFrame.functionName === '(idle)') return;
    totals.busyUs += dt;
    const { origin, owner, stack } = resolve(id);
    totals.self.set(origin, (totals.self.get(origin) ?? 0) + dt);
    totals.owner.set(owner, (totals.owner.get(owner) ?? 0) + dt);
    for (const o of stack) totals.inclusive.set(o, (totals.inclusive.get(o) ?? 0) + dt);
    const fn = frameName(node.callFrame);
    totals.functions.set(fn, (totals.functions.get(fn) ?? 0) + dt);
  });
}

function print(title: string, totals: Totals, top: number, per: number | undefined): void {
  const fmt = (us: number): string => `${(us / 1000).toFixed(0).padStart(7)} ms ${((100 * us) / (totals.busyUs || 1)).toFixed(1).padStart(5)}%${per ? `  ${(us / 1000 / per).toFixed(3).padStart(7)} ms/unit` : ''}`;
  console.log(`${title}\nsampled ${(totals.sampledUs / 1e6).toFixed(1)} s of thread time, busy (not idle) ${(totals.busyUs / 1000).toFixed(0)} ms${per ? ` = ${(totals.busyUs / 1000 / per).toFixed(2)} ms per unit (${per} units)` : ''}; % of busy`);
  const list = (name: string, map: Map<string, number>): void => {
    console.log(`\n${name}`);
    [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).forEach(([k, us]) => console.log(`${fmt(us)}  ${k}`));
  };
  list('self time by origin (native and wasm frames charged to their caller)', totals.self);
  list('self time charged to the nearest package, src/ or bench/ frame on the stack (Node internals and natives to the code that called them)', totals.owner);
  list('inclusive time by origin', totals.inclusive);
  list('self time by function', totals.functions);
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '25' }, per: { type: 'string' }, results: { type: 'string' }, phase: { type: 'string' }, thread: { type: 'string' } },
  });
  const top = Number(values.top);
  const totals: Totals = { self: new Map(), owner: new Map(), inclusive: new Map(), functions: new Map(), busyUs: 0, sampledUs: 0 };
  if (values.results !== undefined) {
    const results = JSON.parse(fs.readFileSync(values.results, 'utf8')) as { profileWindows?: Array<{ phase: string; pid?: number; fromUs: number; toUs: number; units: number }> };
    const windows = results.profileWindows ?? [];
    const window = windows.find((w) => w.phase === values.phase);
    if (!window || window.pid === undefined) {
      console.error(`no phase "${values.phase ?? ''}" in ${values.results}; phases: ${windows.map((w) => w.phase).join(', ') || 'none (an older result file)'}`);
      process.exitCode = 2;
      return;
    }
    const dir = path.dirname(values.results);
    const files = fs.readdirSync(dir)
      .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(window.pid) && (values.thread === undefined || f.split('.')[4] === values.thread))
      .map((f) => path.join(dir, f));
    if (files.length === 0) {
      console.error(`no .cpuprofile of pid ${window.pid} in ${dir}: was the run started with --cpu-prof?`);
      process.exitCode = 2;
      return;
    }
    for (const f of files) accumulate(totals, JSON.parse(fs.readFileSync(f, 'utf8')) as CpuProfile, window);
    print(`phase "${window.phase}" of pid ${window.pid}, ${((window.toUs - window.fromUs) / 1e6).toFixed(1)} s, ${files.length} thread profile(s): ${files.map((f) => path.basename(f)).join(', ')}`, totals, top, values.per === undefined ? window.units : Number(values.per));
    return;
  }
  if (positionals.length === 0) {
    console.error('usage: npx tsx bench/cpu-profile-summary.ts --results RESULT.json --phase NAME | [--top 25] [--per N] FILE.cpuprofile [FILE ...]');
    process.exitCode = 2;
    return;
  }
  for (const f of positionals) accumulate(totals, JSON.parse(fs.readFileSync(f, 'utf8')) as CpuProfile, undefined);
  print(`${positionals.length} profile(s), whole length`, totals, top, values.per === undefined ? undefined : Number(values.per));
}

main();
