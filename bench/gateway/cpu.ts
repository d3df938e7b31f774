/**
 * CPU seconds per process group during a phase, read from `/proc`: this benchmark process, and
 * the subtrees of its children (the gateway, Temporal, Redis, PostgreSQL), plus the machine's
 * busy time. On a small or shared host every process competes for the same cores, so latency
 * only means something next to what each process burned and how much of the machine was busy
 * with work that was not ours. Reaped children count too: PostgreSQL backends come and go.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

const CLOCK_TICKS = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcStat { pid: number; ppid: number; comm: string; ticks: number }

/** utime + stime of the process plus cutime + cstime of its reaped children (PostgreSQL backends come and go). */
function readProcStats(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
      stats.push({ pid: Number(entry), ppid: f[1] ?? 0, comm, ticks: (f[11] ?? 0) + (f[12] ?? 0) + (f[13] ?? 0) + (f[14] ?? 0) });
    } catch {
      // the process ended while we listed /proc
    }
  }
  return stats;
}

export const CpuGroup = { bench: 'bench', gateway: 'gateway', temporal: 'temporal', redis: 'redis', postgres: 'postgres', other: 'other' } as const;
export type CpuGroup = (typeof CpuGroup)[keyof typeof CpuGroup];
export interface CpuSnapshot {
  atMs: number;
  seconds: Record<CpuGroup, number>;
  machineBusyS: number;
  /** CPU seconds of each process named with nameProcesses() (e.g. each Temporal server of a cluster), reaped children included. */
  named: Record<string, number>;
}

/** Processes whose CPU the report shows one by one (the Temporal server processes of `--cluster`), by name. */
const namedPids = new Map<string, number>();

/** Names processes for cpuSnapshot's `named` figures; their CPU still counts in their group. */
export function nameProcesses(pids: Readonly<Record<string, number | undefined>>): void {
  for (const [name, pid] of Object.entries(pids)) if (pid !== undefined) namedPids.set(name, pid);
}

/** Busy CPU seconds of the whole machine (all cores, everything but idle and iowait): the host is shared, so say how much was not ours. */
function machineBusySeconds(): number {
  const fields = (fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((sum, v) => sum + v, 0);
  return (total - (fields[3] ?? 0) - (fields[4] ?? 0)) / CLOCK_TICKS;
}

/** CPU seconds by process group: this process, and each subtree of its children, named by the child. */
export function cpuSnapshot(gatewayPid: number | undefined): CpuSnapshot {
  const seconds: Record<CpuGroup, number> = { bench: 0, gateway: 0, temporal: 0, redis: 0, postgres: 0, other: 0 };
  const usage = process.cpuUsage();
  seconds.bench = (usage.user + usage.system) / 1e6;
  const stats = readProcStats();
  const byPid = new Map(stats.map((s) => [s.pid, s]));
  const groupOfChild = (child: ProcStat): CpuGroup => {
    if (child.pid === gatewayPid) return CpuGroup.gateway;
    if (child.comm.startsWith('temporal')) return CpuGroup.temporal;
    if (child.comm.startsWith('redis')) return CpuGroup.redis;
    if (child.comm.startsWith('postgres')) return CpuGroup.postgres;
    return CpuGroup.other;
  };
  for (const s of stats) {
    // Walk up to the ancestor that is a direct child of this process.
    let node: ProcStat | undefined = s;
    while (node && node.ppid !== process.pid) node = byPid.get(node.ppid);
    if (node) seconds[groupOfChild(node)] += s.ticks / CLOCK_TICKS;
  }
  const named = Object.fromEntries([...namedPids].map(([name, pid]) => [name, (byPid.get(pid)?.ticks ?? 0) / CLOCK_TICKS]));
  return { atMs: performance.now(), seconds, machineBusyS: machineBusySeconds(), named };
}

export interface CpuPhase { wallS: number; cpuS: Record<CpuGroup, number>; machineBusyS: number; named: Record<string, number> }

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot): CpuPhase {
  const groups = Object.keys(a.seconds) as CpuGroup[];
  return {
    wallS: (b.atMs - a.atMs) / 1000,
    cpuS: Object.fromEntries(groups.map((g) => [g, b.seconds[g] - a.seconds[g]])) as Record<CpuGroup, number>,
    machineBusyS: b.machineBusyS - a.machineBusyS,
    named: Object.fromEntries(Object.keys(b.named).map((name) => [name, (b.named[name] ?? 0) - (a.named[name] ?? 0)])),
  };
}

/**
 * CPU seconds of one process by thread kind, from `/proc/<pid>/task/<tid>/stat`: the main JavaScript thread
 * (Express, the client, activities), the Temporal core's Rust threads (tokio, the core runtime), the V8
 * profiler's threads (only with --cpu-prof), and every other thread (the workflow worker thread, V8's GC
 * helpers, libuv's pool; Node gives them all the name "node"). Tells where a process's CPU goes that a
 * V8 profile, which samples JavaScript threads only, does not see.
 */
export const ThreadGroup = { main: 'main', temporalCore: 'temporal core', profiler: 'profiler', other: 'other threads' } as const;
export type ThreadGroup = (typeof ThreadGroup)[keyof typeof ThreadGroup];

export function threadSnapshot(pid: number | undefined): Record<ThreadGroup, number> {
  const seconds: Record<ThreadGroup, number> = { main: 0, 'temporal core': 0, profiler: 0, 'other threads': 0 };
  if (pid === undefined) return seconds;
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return seconds; // the process has ended
  }
  for (const tid of tids) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
      const s = ((f[11] ?? 0) + (f[12] ?? 0)) / CLOCK_TICKS;
      const group: ThreadGroup = tid === String(pid) ? ThreadGroup.main
        : comm.startsWith('tokio') || comm.startsWith('temporal') ? ThreadGroup.temporalCore
          : comm.startsWith('v8:Prof') ? ThreadGroup.profiler : ThreadGroup.other;
      seconds[group] += s;
    } catch {
      // the thread ended while we listed it
    }
  }
  return seconds;
}

export function threadsBetween(a: Record<ThreadGroup, number>, b: Record<ThreadGroup, number>): Record<ThreadGroup, number> {
  const groups = Object.values(ThreadGroup);
  return Object.fromEntries(groups.map((g) => [g, b[g] - a[g]])) as Record<ThreadGroup, number>;
}
