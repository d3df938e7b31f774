/**
 * The flood generator of the isolation benchmark (a child of bench/isolation.ts, driven over IPC by
 * bench/isolation/flood.ts): autocannon at a fixed number of connections against one URL until
 * told to stop. A process of its own so that a flood of thousands of responses per second does not
 * run on the event loop that times the victim's requests.
 *
 * Every response is kept as (completion time on the monotonic clock, status, latency), so the
 * parent can ask for the figures of any window (the victim's measurement) while the flood goes on.
 */
import autocannon from 'autocannon';
import { summarise } from '../gateway/statistics';
import type { FloodReply, FloodRequest, FloodWindowFigures } from './flood';

const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

const at: number[] = [];
const statuses: number[] = [];
const latencies: number[] = [];
const errorsAt: number[] = [];
let instance: autocannon.Instance | undefined;
let finished: Promise<void> | undefined;

function send(reply: FloodReply): void {
  process.send?.(reply);
}

function windowFigures(fromUs: number, toUs: number): FloodWindowFigures {
  const byStatus = new Map<number, number[]>();
  const all: number[] = [];
  for (let i = 0; i < at.length; i++) {
    const t = at[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const status = statuses[i] ?? 0;
    const ms = latencies[i] ?? 0;
    all.push(ms);
    const list = byStatus.get(status) ?? [];
    list.push(ms);
    byStatus.set(status, list);
  }
  const seconds = (toUs - fromUs) / 1e6;
  return {
    seconds,
    responses: all.length,
    perSecond: seconds > 0 ? all.length / seconds : 0,
    errors: errorsAt.filter((t) => t >= fromUs && t <= toUs).length,
    latency: summarise(all),
    byStatus: Object.fromEntries([...byStatus.entries()].map(([status, list]) => [String(status), { count: list.length, perSecond: seconds > 0 ? list.length / seconds : 0, latency: summarise(list) }])),
  };
}

function start(req: Extract<FloodRequest, { type: 'start' }>): void {
  at.length = 0;
  statuses.length = 0;
  latencies.length = 0;
  errorsAt.length = 0;
  finished = new Promise((resolve) => {
    instance = autocannon(
      {
        url: req.url,
        method: req.method,
        headers: req.headers,
        body: req.body,
        connections: req.connections,
        timeout: req.timeoutS,
        duration: 3600, // stopped by the parent, well before
      },
      () => resolve(),
    );
  });
  instance?.on('response', (_client, status, _bytes, ms) => {
    at.push(monotonicUs());
    statuses.push(status);
    latencies.push(ms);
  });
  instance?.on('reqError', () => errorsAt.push(monotonicUs()));
}

process.on('message', (req: FloodRequest) => {
  if (req.type === 'start') {
    start(req);
    send({ type: 'started' });
  } else if (req.type === 'stats') {
    send({ type: 'stats', figures: windowFigures(req.fromUs, req.toUs) });
  } else {
    instance?.stop();
    void (finished ?? Promise.resolve()).then(() => {
      instance = undefined;
      send({ type: 'stopped' });
    });
  }
});
process.on('disconnect', () => {
  instance?.stop();
  process.exit(0);
});
send({ type: 'ready' });
