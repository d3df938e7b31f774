/**
 * The Temporal client's side of a billed request's workflow (used by the API): start
 * it and learn admission in one round trip (update-with-start), and, while Redis is
 * down, wait for the upstream output through an update instead of the Redis Stream
 * relay. Not workflow code: it never enters the workflow bundle.
 */
import { WithStartWorkflowOperation, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client, type WorkflowOptions } from '@temporalio/client';
import { billedRequest } from './billed-request';
import {
  ADMISSION_UPDATE_ID,
  admissionUpdate,
  billedRequestWorkflowId,
  operationOf,
  RequestStatus,
  upstreamOutputUpdate,
  type AdmissionReply,
  type BilledRequestInput,
  type BilledRequestResult,
  type UpstreamOutcome,
} from './definitions';
import { SearchKeys } from './search-attributes';

/**
 * How a billed request's workflow is started: one id per request id; a running
 * duplicate attaches to the first run; a finished one is never started again,
 * unless it failed before admitting anything (admission unavailable). Its tasks carry
 * the tenant as fairness key: while the task queue is backlogged the server dispatches
 * round-robin over tenants, so one tenant's burst does not delay the others' requests
 * (the workflow gives its regular activities the same key).
 */
export function billedRequestStart(input: BilledRequestInput, taskQueue: string): WithStartWorkflowOperation<typeof billedRequest> {
  return new WithStartWorkflowOperation(billedRequest, { ...billedRequestStartOptions(input, taskQueue), args: [input] });
}

/** The start options of billedRequestStart, apart from the workflow and its arguments (the benchmark's floor starts its own workflow with them). */
export function billedRequestStartOptions(input: BilledRequestInput, taskQueue: string): Omit<WorkflowOptions, 'args'> & { workflowIdConflictPolicy: 'USE_EXISTING' } {
  return {
    workflowId: billedRequestWorkflowId(input.requestId),
    taskQueue,
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
    // A tenant id is at most 64 ASCII characters (src/api/schemas.ts): within the fairness key's 64 bytes.
    priority: { fairnessKey: input.tenantId },
    typedSearchAttributes: [
      { key: SearchKeys.tenantId, value: input.tenantId },
      { key: SearchKeys.apiKeyId, value: input.apiKeyId },
      { key: SearchKeys.model, value: input.model },
      { key: SearchKeys.requestStatus, value: RequestStatus.admitted },
      // Set at start only (not upserted by the workflow): histories recorded before it replay unchanged.
      { key: SearchKeys.operation, value: operationOf(input) },
    ],
  };
}

/**
 * True for the server's "Workflow was not started: StartDeduped" (UNAVAILABLE): an earlier attempt of
 * this update-with-start started the run, but its answer was lost (the frontend or the history host
 * died in between: test/cluster/temporal-server-kill.test.ts). The retried start is deduplicated by
 * its request id and the server refuses the whole operation again on every retry, so the client
 * attaches to that run instead (Temporal server 1.32, service/history/api/multioperation).
 */
function isStartOfLostAttempt(err: unknown): boolean {
  return err instanceof Error && /Workflow was not started: StartDeduped/.test(err.message);
}

export type AdmitResult =
  | { kind: 'decided'; decision: AdmissionReply }
  /** The request id already ran to completion: the first run's result. */
  | { kind: 'finished'; result: BilledRequestResult };

/**
 * Attaching after a failed update-with-start: 5 tries over about 15 s (0.5, 1, 2, 4, 8 s apart),
 * long enough for the server to retry a workflow task that failed when its worker was killed.
 */
const ATTACH_ATTEMPTS = 5;
const ATTACH_BACKOFF_MS = 500;

/** The server refuses updates while the run's last workflow task failed (its worker died): transient. */
export function isWorkflowTaskFailing(err: unknown): boolean {
  return err instanceof Error && /Workflow Task in failed state/.test(`${err.message} ${String((err as { cause?: unknown }).cause)}`);
}

export function createBilledRequestClient(client: Client, taskQueue: string) {
  /** A workflow's status name (RUNNING, COMPLETED, FAILED, ...), as ops see it in the Web UI. */
  const status = async (workflowId: string): Promise<string> => (await client.workflow.getHandle(workflowId).describe()).status.name;

  /**
   * After update-with-start failed with something else than "already started", the workflow
   * may still have been started: the server deduplicated a retried start ("StartDeduped"), the
   * update met a failing workflow task while a worker restarted, or Temporal restarted between
   * the start and the answer. A started workflow admits and bills on its own, so answering 503
   * then would bill a request its client was told had failed (found by the fault-injection soak,
   * issue 14). Attach to it with the same update id instead, a few times while it recovers; only
   * a workflow that does not exist makes the original failure stand.
   */
  const attach = async (workflowId: string, original: unknown): Promise<AdmitResult> => {
    const handle = client.workflow.getHandle(workflowId);
    for (let attempt = 0; ; attempt++) {
      try {
        return { kind: 'decided', decision: await handle.executeUpdate(admissionUpdate, { updateId: ADMISSION_UPDATE_ID }) };
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) {
          // Not running: never started (the failure stands), or already finished (its result holds the decision).
          const finished = await handle.describe().then((d) => d.status.name !== 'RUNNING', () => false);
          if (!finished) throw original;
          return { kind: 'finished', result: (await handle.result()) as BilledRequestResult };
        }
        // Waiting only helps a run the server is recovering; an unreachable Temporal gets one try,
        // so an outage still answers 503 at once (and a client retrying its key attaches later).
        const recovering = isWorkflowTaskFailing(err) || isWorkflowTaskFailing(original) || isStartOfLostAttempt(original);
        if (!recovering || attempt >= ATTACH_ATTEMPTS - 1) throw original;
        await new Promise((r) => setTimeout(r, ATTACH_BACKOFF_MS * 2 ** attempt));
      }
    }
  };

  return {
    async admit(input: BilledRequestInput): Promise<AdmitResult> {
      const workflowId = billedRequestWorkflowId(input.requestId);
      const startWorkflowOperation = billedRequestStart(input, taskQueue);
      try {
        const decision = await client.workflow.executeUpdateWithStart(admissionUpdate, {
          updateId: ADMISSION_UPDATE_ID,
          startWorkflowOperation,
        });
        return { kind: 'decided', decision };
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) return attach(workflowId, err);
        const result = (await client.workflow.getHandle(workflowId).result()) as BilledRequestResult;
        // (Reached only with an update id the finished run never saw; the same id returns its stored decision.)
        return { kind: 'finished', result };
      }
    },

    /** Relay mode 'result': the upstream outcome with its relayed entries, null when every attempt failed. */
    async awaitOutput(requestId: string): Promise<UpstreamOutcome | null> {
      const handle = client.workflow.getHandle(billedRequestWorkflowId(requestId));
      for (let attempt = 0; ; attempt++) {
        try {
          return await handle.executeUpdate(upstreamOutputUpdate, { updateId: 'output' });
        } catch (err) {
          // A worker killed under the run: the server retries its workflow task; so do we (issue 14).
          if (isWorkflowTaskFailing(err) && attempt < ATTACH_ATTEMPTS - 1) {
            await new Promise((r) => setTimeout(r, ATTACH_BACKOFF_MS * 2 ** attempt));
            continue;
          }
          // An update that arrives while the workflow closes is aborted: the result has the same outcome.
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          const result = (await handle.result()) as BilledRequestResult;
          return result.upstream ?? null;
        }
      }
    },

    /** True once the request's workflow has closed (its relay may have expired), or is gone past the namespace's retention. */
    async isFinished(requestId: string): Promise<boolean> {
      try {
        return (await status(billedRequestWorkflowId(requestId))) !== 'RUNNING';
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return true;
        throw err;
      }
    },

    /** The result of a closed run; undefined when it is gone past the namespace's retention. */
    async closedResult(requestId: string): Promise<BilledRequestResult | undefined> {
      try {
        return (await client.workflow.getHandle(billedRequestWorkflowId(requestId)).result()) as BilledRequestResult;
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return undefined;
        throw err;
      }
    },

    status,
  };
}

export type BilledRequestClient = ReturnType<typeof createBilledRequestClient>;
