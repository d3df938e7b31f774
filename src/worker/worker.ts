/** The Temporal worker: request-lifecycle workflows and their activities on one task queue. */
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Config } from '../config';

export interface BillingWorkerOptions {
  config: Readonly<Config>;
  temporalAddress: string;
  activities: object;
}

export async function createBillingWorker(opts: BillingWorkerOptions): Promise<{ worker: Worker; connection: NativeConnection }> {
  const connection = await NativeConnection.connect({ address: opts.temporalAddress });
  const worker = await Worker.create({
    connection,
    namespace: opts.config.TEMPORAL_NAMESPACE,
    taskQueue: opts.config.TEMPORAL_TASK_QUEUE,
    workflowsPath: require.resolve('../workflows'),
    activities: opts.activities,
  });
  return { worker, connection };
}
