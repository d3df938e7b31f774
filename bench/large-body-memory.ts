/**
 * `npm run bench:body-memory` (issue 8, item 2): how much memory one large request costs the
 * API and the worker, process by process.
 *
 * It starts the embedded services (throwaway, as in tests) and, for every run, three fresh
 * children: the API (`src/main.ts api`), the worker (`src/main.ts worker`) and the mock
 * upstream, each with `--trace-gc`. After a warm-up it resets each child's peak RSS (`/proc/<pid>/clear_refs`),
 * sends one chat request of `--mb` MiB (default just under the 32 MiB limit: one inline base64
 * image), waits until it is settled, and reports per process:
 *
 * - peak RSS above the RSS just before the request (VmHWM - VmRSS): everything the request
 *   cost at its worst moment, V8 heap and Buffers (external memory) alike;
 * - the largest V8 heap use seen at a GC during the request, above the heap in use before it
 *   (from --trace-gc; a lower bound of the heap peak, since a GC need not run at the peak).
 *
 * `--runs N` repeats it with new processes (each run is reported; a second request in the same
 * processes would start from the first one's uncollected garbage); JSON goes to bench/results/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadConfig } from '../src/config';
import { startStack, type RunningStack } from '../src/embedded';
import { freePort } from '../src/embedded/child';
import { createLogger } from '../src/log';

const MiB = 1024 * 1024;
const ADMIN_TOKEN = `bench-admin-${randomBytes(12).toString('hex')}`;

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  const value = at >= 0 ? Number(process.argv[at + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  return value;
}

interface Child {
  name: string;
  proc: ChildProcess;
  /** --trace-gc lines so far. */
  gcLines: string[];
  /** It printed "Durable billing is ready". */
  ready(): boolean;
  stop(): Promise<void>;
}

function startChild(name: string, args: string[], env: NodeJS.ProcessEnv): Child {
  const rootDir = loadConfig().rootDir;
  const proc = spawn(process.execPath, ['--trace-gc', '--import', 'tsx', ...args], { cwd: rootDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const gcLines: string[] = [];
  const tail: string[] = [];
  let carry = '';
  let ready = false;
  proc.stdout?.on('data', (buf: Buffer) => {
    const lines = (carry + buf.toString('utf8')).split('\n');
    carry = lines.pop() ?? '';
    for (const line of lines) {
      if (line.includes('Durable billing is ready')) ready = true;
      (/ms: (Scavenge|Mark-Compact|Mark-Sweep|Minor)/.test(line) ? gcLines : tail).push(line);
    }
    tail.splice(0, Math.max(0, tail.length - 20));
  });
  proc.stderr?.on('data', (buf: Buffer) => tail.push(buf.toString('utf8')));
  proc.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') console.error(`${name} exited (${code ?? signal}):\n${tail.join('\n')}`);
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return {
    name,
    proc,
    gcLines,
    ready: () => ready,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not become ready in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const status = (pid: number): string => fs.readFileSync(`/proc/${pid}/status`, 'utf8');
const kib = (text: string, field: string): number => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN);

/** The largest "used before" heap figure (MB) among --trace-gc lines. */
function maxHeapBeforeGc(lines: readonly string[]): number {
  let most = 0;
  for (const line of lines) {
    const m = /ms: [A-Za-z-]+[^\d]*([\d.]+) \(([\d.]+)\) ->/.exec(line);
    if (m) most = Math.max(most, Number(m[1]));
  }
  return most;
}
/** The heap in use after the last GC (MB). */
function heapAfterLastGc(lines: readonly string[]): number {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = /-> ([\d.]+) \(/.exec(lines[i]!);
    if (m) return Number(m[1]);
  }
  return 0;
}

/** A chat request of about `bytes` bytes: a short text and one inline base64 "image". */
function largeBody(bytes: number): string {
  const head = '{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":[{"type":"text","text":"what is in this picture? [mock:tokens=3]"},{"type":"image_url","image_url":{"url":"data:image/png;base64,';
  const tail = '"}}]}]}';
  const b64 = randomBytes(Math.ceil((bytes - head.length - tail.length) * 0.75) + 3).toString('base64').slice(0, bytes - head.length - tail.length);
  return head + b64 + tail;
}

async function main(): Promise<void> {
  const mb = flag('mb', 31.9);
  const runs = flag('runs', 2);
  const config = loadConfig();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-body-memory-'));
  fs.chmodSync(dataDir, 0o755);
  let stack: RunningStack | undefined;
  const children: Child[] = [];
  try {
    stack = await startStack(config, {
      dataDir,
      ephemeral: true,
      ports: { temporal: await freePort(), temporalUi: await freePort(), redis: await freePort(), postgres: await freePort() },
    }, createLogger('warn', 'bench'));
    const [apiPort, mockPort, workerMetricsPort] = [await freePort(), await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: stack.temporalAddress,
      REDIS_URL: stack.redisUrl,
      DATABASE_URL: stack.databaseUrl,
      ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
      API_PORT: String(apiPort),
      MOCK_UPSTREAM_PORT: String(mockPort),
      WORKER_METRICS_PORT: String(workerMetricsPort),
      UPSTREAM_BASE_URL: `http://127.0.0.1:${mockPort}/v1`,
      TEMPORAL_TASK_QUEUE: `bench-body-memory-${process.pid}`,
    };
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const admin = async (method: string, p: string, body: unknown): Promise<Record<string, unknown>> => {
      const res = await fetch(`${apiUrl}${p}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, unknown>;
    };
    let key = '';
    const chat = async (body: string): Promise<{ requestId: string; ms: number }> => {
      const started = performance.now();
      const res = await fetch(`${apiUrl}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`chat: ${res.status} ${text.slice(0, 300)}`);
      const requestId = res.headers.get('x-request-id') ?? '';
      await waitFor('settlement', async () => {
        const r = await fetch(`${apiUrl}/admin/requests/${requestId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        return r.ok && ((await r.json()) as { status: string }).status === 'committed';
      }, 60_000);
      return { requestId, ms: performance.now() - started };
    };

    const body = largeBody(Math.floor(mb * MiB));
    const results: Array<Record<string, unknown>> = [];
    for (let run = 1; run <= runs; run++) {
      const mock = startChild('mock upstream', ['src/upstream/mock/main.ts'], env);
      children.push(mock);
      await waitFor('mock upstream', async () => (await fetch(`http://127.0.0.1:${mockPort}/healthz`)).ok);
      // The worker first: both roles migrate at start, and two first migrations at once collide.
      const worker = startChild('worker', ['src/main.ts', 'worker'], env);
      children.push(worker);
      await waitFor('worker', () => Promise.resolve(worker.ready()));
      const api = startChild('API', ['src/main.ts', 'api'], env);
      children.push(api);
      await waitFor('API', async () => (await fetch(`${apiUrl}/readyz`)).ok);
      if (run === 1) {
        await admin('PUT', '/admin/models/gpt-4o-mini', { input_price_micros_per_mtok: 150000, output_price_micros_per_mtok: 600000, max_output_tokens: 4096 });
        await admin('POST', '/admin/tenants', { id: 'bench', name: 'bench', quota_limit_micros: 1_000_000_000_000 });
        ({ key } = await admin('POST', '/admin/tenants/bench/api-keys', { name: 'bench' }) as { key: string });
      }
      // Warm-up: code paths compiled, pools open, tiktoken loaded.
      for (let i = 0; i < 3; i++) await chat(JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: `warm up ${i}` }] }));
      await new Promise((r) => setTimeout(r, 1000));

      const before = new Map(children.map((c) => {
        const pid = c.proc.pid!;
        fs.writeFileSync(`/proc/${pid}/clear_refs`, '5'); // peak RSS := current RSS
        return [c.name, { rssKiB: kib(status(pid), 'VmRSS'), gcAt: c.gcLines.length, heapMB: heapAfterLastGc(c.gcLines) }];
      }));
      const { ms } = await chat(body);
      for (const c of children) {
        const b = before.get(c.name)!;
        const s = status(c.proc.pid!);
        const peakHeap = maxHeapBeforeGc(c.gcLines.slice(b.gcAt));
        results.push({
          run,
          process: c.name,
          rssBeforeMiB: +(b.rssKiB / 1024).toFixed(1),
          peakRssAboveMiB: +((kib(s, 'VmHWM') - b.rssKiB) / 1024).toFixed(1),
          heapBeforeMB: b.heapMB,
          peakHeapAboveMB: peakHeap > 0 ? +(peakHeap - b.heapMB).toFixed(1) : null,
          gcs: c.gcLines.length - b.gcAt,
          requestMs: Math.round(ms),
        });
      }
      for (const c of children.splice(0).reverse()) await c.stop();
    }
    console.log(`one chat request of ${(body.length / MiB).toFixed(2)} MiB (${body.length} bytes), ${runs} run(s); node ${process.version}\n`);
    console.log('| run | process | RSS before (MiB) | peak RSS above it (MiB) | heap before (MB) | peak heap at a GC above it (MB) | GCs | request + settlement (ms) |');
    console.log('|---|---|---|---|---|---|---|---|');
    for (const r of results) console.log(`| ${[r.run, r.process, r.rssBeforeMiB, r.peakRssAboveMiB, r.heapBeforeMB, r.peakHeapAboveMB ?? '-', r.gcs, r.requestMs].join(' | ')} |`);
    const out = path.join(config.rootDir, 'bench', 'results', `body-memory-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify({ bytes: body.length, node: process.version, results }, null, 2));
    console.log(`\n${out}`);
  } finally {
    for (const c of children.reverse()) await c.stop();
    await stack?.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
