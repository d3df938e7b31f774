/**
 * The floor process (a child of the gateway benchmark, started by bench/gateway/floor.ts): a
 * Temporal worker for the no-op floor workflow, with the billing worker's options, and a Temporal
 * client (the same gRPC client the API uses) that drives it in closed loops, in one Node process
 * like the gateway's API + worker. Its CPU is therefore comparable with the gateway process's:
 * what the gateway burns above it is what the project adds on top of Temporal.
 *
 * Driven over IPC: `run` (connections, a duration or a count) answers the phase's figures;
 * `drain` waits for the trailing settlements; `stop` shuts down and exits, so `--cpu-prof` can
 * write its profile.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Client, Connection, WithStartWorkflowOperation } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type { BilledRequestInput } from '../../src/workflows/definitions';
import { billedRequestStartOptions } from '../../src/workflows/client';
import { counters, createFloorActivities, upstreamDone } from './floor-activities';
import { floorAdmissionUpdate, floorRequest } from './floor-workflow';
import { CHAT_BODY, MODEL, PRICE, REQUEST_TIMEOUT_S } from './options';
import { summarise } from './statistics';
import type { FloorFigures, FloorRequest, FloorReply } from './floor';

const address = process.env.FLOOR_TEMPORAL_ADDRESS ?? '';
const namespace = process.env.FLOOR_TEMPORAL_NAMESPACE ?? 'default';
const taskQueue = process.env.FLOOR_TASK_QUEUE ?? '';
const tenantId = process.env.FLOOR_TENANT_ID ?? 'bench-floor';

function send(reply: FloorReply): void {
  process.send?.(reply);
}

/** A workflow input of the product's shape and about its size (the gateway's CHAT_BODY request). */
function floorInput(): BilledRequestInput {
  const requestId = `req_${randomBytes(12).toString('hex')}`;
  return {
    requestId,
    tenantId,
    apiKeyId: 'floor-key',
    model: MODEL,
    price: { model: MODEL, inputPriceMicrosPerMtok: PRICE.input_price_micros_per_mtok, outputPriceMicrosPerMtok: PRICE.output_price_micros_per_mtok, maxOutputTokens: PRICE.max_output_tokens },
    promptTokens: 16,
    maxOutputTokens: CHAT_BODY.max_tokens,
    reservedMicros: 41,
    stream: false,
    includeUsage: false,
    relayMode: 'redis',
    bodyRef: { requestId },
    requestHash: randomBytes(32).toString('hex'),
  };
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
  const nativeConnection = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection: nativeConnection,
    namespace,
    taskQueue,
    workflowsPath: require.resolve('./floor-workflow'),
    activities: createFloorActivities(),
    // The billing worker's settings (src/roles/worker.ts).
    maxConcurrentWorkflowTaskExecutions: 100,
    maxConcurrentWorkflowTaskPolls: 20,
    maxCachedWorkflows: 2000,
  });
  const running = worker.run();
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace });
  let totalCompleted = 0;

  const runPhase = async (req: Extract<FloorRequest, { type: 'run' }>): Promise<FloorFigures> => {
    const latencies: number[] = [];
    const admissions: number[] = [];
    let started = 0;
    let errors = 0;
    let lastError: string | undefined;
    const t0 = performance.now();
    let lastDone = t0;
    const deadline = req.durationS !== undefined ? t0 + req.durationS * 1000 : Infinity;
    const more = (): boolean => (req.amount !== undefined ? started < req.amount : performance.now() < deadline);
    const loop = async (): Promise<void> => {
      while (more()) {
        started += 1;
        const input = floorInput();
        let timer: NodeJS.Timeout | undefined;
        const done = new Promise<void>((resolve, reject) => {
          upstreamDone.set(input.requestId, resolve);
          timer = setTimeout(() => reject(new Error(`no upstream activity after ${REQUEST_TIMEOUT_S} s`)), REQUEST_TIMEOUT_S * 1000);
        });
        done.catch(() => undefined); // awaited below; this only keeps an early rejection from being unhandled
        const s = performance.now();
        try {
          // The product's start options (src/workflows/client.ts), on the floor's task queue, under the floor's own id.
          const startWorkflowOperation = new WithStartWorkflowOperation(floorRequest, {
            ...billedRequestStartOptions(input, taskQueue),
            workflowId: `floor:${input.requestId}`,
            args: [input],
          });
          await client.workflow.executeUpdateWithStart(floorAdmissionUpdate, { updateId: 'admission', startWorkflowOperation });
          admissions.push(performance.now() - s);
          await done;
          lastDone = performance.now();
          latencies.push(lastDone - s);
          totalCompleted += 1;
        } catch (err) {
          errors += 1;
          lastError = err instanceof Error ? err.message : String(err);
          upstreamDone.delete(input.requestId);
        } finally {
          clearTimeout(timer);
        }
      }
    };
    await Promise.all(Array.from({ length: req.connections }, loop));
    const durationS = (lastDone - t0) / 1000;
    return {
      connections: req.connections,
      started,
      completed: latencies.length,
      errors,
      lastError,
      durationS,
      perSecond: durationS > 0 ? latencies.length / durationS : 0,
      latency: summarise(latencies),
      admission: summarise(admissions),
    };
  };

  const drain = async (): Promise<number> => {
    const until = performance.now() + 60_000;
    while (counters.settled < totalCompleted && performance.now() < until) await new Promise((r) => setTimeout(r, 100));
    return totalCompleted - counters.settled;
  };

  const stop = async (): Promise<void> => {
    worker.shutdown();
    await running;
    await connection.close();
    await nativeConnection.close();
    process.exit(0); // exits normally, so --cpu-prof writes the profiles
  };

  process.on('message', (msg: FloorRequest) => {
    if (msg.type === 'run') runPhase(msg).then((figures) => send({ type: 'result', figures }), (err: unknown) => send({ type: 'failed', message: String(err) }));
    else if (msg.type === 'drain') drain().then((unsettled) => send({ type: 'drained', unsettled }), (err: unknown) => send({ type: 'failed', message: String(err) }));
    else void stop();
  });
  process.on('disconnect', () => void stop());
  send({ type: 'ready' });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
