/**
 * What Temporal knows about a pending reservation's workflow: whether it still runs,
 * and, once it is closed, what it was started with and what its UpstreamCallStep
 * returned, read from its history and decoded with the client's data converter (the
 * payload codec: history is encrypted, src/codec/). The sweeper settles from this
 * exactly what the workflow itself would have settled.
 */
import { isGrpcServiceError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { decodeFromPayloadsAtIndex } from '@temporalio/common/lib/internal-non-workflow';
import type { temporal } from '@temporalio/proto';

/** The activity type whose completed result is the upstream outcome the workflow hands to BillingStep. */
const UPSTREAM_ACTIVITY = 'upstreamCallStep';

/**
 * - running: leave the reservation alone, its workflow will settle it (PAUSED counts: it resumes);
 * - closed: completed, failed, terminated, timed out, cancelled or continued as new; it will
 *   never settle anything again;
 * - not_found: never started in this namespace, or removed after its retention period.
 */
export type WorkflowState =
  | { kind: 'running'; status: string }
  | { kind: 'closed'; status: string; runId: string }
  | { kind: 'not_found' };

/** A closed run's history, decoded. `input` and `upstream` are what the history holds: unchecked. */
export interface RecoveredRun {
  /** The first argument of WorkflowExecutionStarted (the BilledRequestInput). */
  input: unknown;
  /** The result of the last completed UpstreamCallStep, or null when none completed. */
  upstream: unknown;
}

/** Thrown when Temporal answers a describe with a status the sweeper does not know: it touches nothing. */
export class UnknownWorkflowStatusError extends Error {
  override name = 'UnknownWorkflowStatusError';

  constructor(
    readonly workflowId: string,
    readonly status: string,
  ) {
    super(`Workflow ${workflowId} has status ${status}`);
  }
}

/** Thrown when a closed run's history has no WorkflowExecutionStarted event with an input. */
export class HistoryWithoutInputError extends Error {
  override name = 'HistoryWithoutInputError';

  constructor(readonly workflowId: string) {
    super(`History of workflow ${workflowId} holds no start input`);
  }
}

const CLOSED = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'CONTINUED_AS_NEW', 'TIMED_OUT']);
const RUNNING = new Set(['RUNNING', 'PAUSED']);

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** gRPC NOT_FOUND: fetchHistory passes the server's error through, unlike describe (WorkflowNotFoundError). */
const GRPC_NOT_FOUND = 5;
const isNotFound = (err: unknown): boolean => err instanceof WorkflowNotFoundError || (isGrpcServiceError(err) && Number(err.code) === GRPC_NOT_FOUND);

export function createWorkflowInspector(client: Pick<Client, 'workflow'>) {
  const converter = client.workflow.options.loadedDataConverter;
  const decodeFirst = (payloads: Payload[] | null | undefined): Promise<unknown> => decodeFromPayloadsAtIndex<unknown>(converter, 0, payloads);

  /** The result of the last UpstreamCallStep that completed; null when none did (still running, failed, timed out). */
  async function upstreamResult(events: readonly HistoryEvent[]): Promise<unknown> {
    const upstreamScheduled = new Set(
      events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === UPSTREAM_ACTIVITY).map((e) => String(e.eventId)),
    );
    const completed = events.filter((e) => {
      const attrs = e.activityTaskCompletedEventAttributes;
      return attrs != null && upstreamScheduled.has(String(attrs.scheduledEventId));
    });
    const last = completed[completed.length - 1]?.activityTaskCompletedEventAttributes;
    return last ? decodeFirst(last.result?.payloads) : null;
  }

  return {
    /** Describe (read from the workflow's own state, not from visibility: no lag). */
    async state(workflowId: string): Promise<WorkflowState> {
      let status: string;
      let runId: string;
      try {
        const described = await client.workflow.getHandle(workflowId).describe();
        status = described.status.name;
        runId = described.runId;
      } catch (err) {
        if (isNotFound(err)) return { kind: 'not_found' };
        throw err;
      }
      if (RUNNING.has(status)) return { kind: 'running', status };
      if (CLOSED.has(status)) return { kind: 'closed', status, runId };
      throw new UnknownWorkflowStatusError(workflowId, status);
    },

    /** The decoded start input and upstream outcome of one run; undefined when its history is gone (retention). */
    async recover(workflowId: string, runId: string): Promise<RecoveredRun | undefined> {
      let events: HistoryEvent[];
      try {
        events = (await client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
      const started = events.find((e) => e.workflowExecutionStartedEventAttributes != null)?.workflowExecutionStartedEventAttributes;
      const payloads = started?.input?.payloads;
      if (!payloads || payloads.length === 0) throw new HistoryWithoutInputError(workflowId);
      return { input: await decodeFirst(payloads), upstream: await upstreamResult(events) };
    },
  };
}

export type WorkflowInspector = ReturnType<typeof createWorkflowInspector>;
