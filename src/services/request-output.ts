/**
 * A billed request's output on its way to the client: the live relay read (Redis Stream), the
 * output a run in relay mode 'result' left in the body store, and what a client arriving after
 * the run closed gets. Used by ./billed-requests.ts once admission is known.
 */
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { Logger } from '../log';
import { RelayTimeoutError, RelayUnavailableError, type RelayEntry, type RequestRelay } from '../redis/request-relay';
import type { BilledRequestClient } from '../workflows/client';
import type { BilledRequestInput, BilledRequestResult } from '../workflows/definitions';
import { IdempotencyConflictError, UpstreamFailedError } from './request-errors';

export interface RequestOutputDeps {
  workflows: Pick<BilledRequestClient, 'isFinished' | 'closedResult'>;
  bodies: Pick<RequestBodyRepository, 'get' | 'delete'>;
  relay: Pick<RequestRelay, 'entries' | 'read' | 'requestCancel'>;
  log: Pick<Logger, 'warn'>;
  /** How long to wait for the next relayed output before giving up (502). @default 120000 */
  relayIdleTimeoutMs?: number;
}

/** Internal: the relay read found no stream and the run has closed. */
class RunClosedWithoutRelayError extends Error {}

export function createRequestOutput(deps: RequestOutputDeps) {
  /** Stops the upstream call of a request nobody reads any more (billed for what it delivered). */
  function cancel(input: BilledRequestInput): void {
    if (input.relayMode !== 'redis') return;
    deps.relay.requestCancel(input.tenantId, input.requestId).catch((err: unknown) => deps.log.warn({ requestId: input.requestId, err }, 'could not relay the client cancel'));
  }

  /** Deletes a stored body; a failure is logged (the body store's expiry removes it later). */
  function dropBody(requestId: string, kind: 'request' | 'output'): Promise<void> {
    return deps.bodies.delete(requestId, kind).catch((err: unknown) => deps.log.warn({ requestId, kind, err }, 'could not delete a stored body'));
  }

  /**
   * Relay mode 'result': the output the run left in the body store, read and dropped (delivered);
   * undefined when there is none. A conversation's exchange is appended from it too, later
   * (ConversationAppendStep): that one is left to the store's expiry.
   */
  async function storedOutput(input: BilledRequestInput): Promise<RelayEntry[] | undefined> {
    const stored = await deps.bodies.get(input.requestId, 'output');
    if (!stored) return undefined;
    if (input.conversationId === undefined) await dropBody(input.requestId, 'output');
    return JSON.parse(stored.toString('utf8')) as RelayEntry[];
  }

  /**
   * What a client arriving after the run closed gets: the relay stream, or in relay mode 'result'
   * the output no attempt read yet (its first attempt was told 503), or a voided run's failure
   * again (nothing was billed). Otherwise the output has expired: 409.
   */
  async function closedRunOutput(input: BilledRequestInput, result: BilledRequestResult): Promise<RelayEntry[]> {
    const entries = input.relayMode === 'redis' ? await deps.relay.entries(input.tenantId, input.requestId) : [];
    if (entries.length > 0) return entries;
    const stored = result.upstream?.outputRef ? await storedOutput(input) : undefined;
    if (stored) return stored;
    if (result.settlement?.status === 'voided') throw new UpstreamFailedError();
    deps.log.warn({ requestId: input.requestId, relayMode: input.relayMode }, 'finished request: its output has expired');
    throw new IdempotencyConflictError('expired');
  }

  /** The live relay of an admitted request; silence past the idle timeout, or Redis failing under the read, cancels the call and fails with a 502. */
  async function* relayed(input: BilledRequestInput, signal: AbortSignal): AsyncGenerator<RelayEntry> {
    const onMissing = async (): Promise<void> => {
      // A repeated Idempotency-Key of a request that finished long ago: its relay has expired, nothing will come.
      // (An admitted run writes its relay before it closes: one that closed while this describe() was on its
      // way has a stream by now, and the relay's read goes on with it instead of ending with this error.)
      let finished: boolean;
      try {
        finished = await deps.workflows.isFinished(input.requestId);
      } catch (err) {
        // Temporal could not tell (a frontend or a shard of a server process that died): the read goes on,
        // bounded by the idle timeout (then a 502 billed for what was delivered), never a 5xx while the run bills.
        deps.log.warn({ requestId: input.requestId, err: (err as Error).message }, 'could not learn whether the run closed: still waiting for its relay');
        return;
      }
      if (finished) throw new RunClosedWithoutRelayError();
    };
    try {
      yield* deps.relay.read(input.tenantId, input.requestId, { signal, idleTimeoutMs: deps.relayIdleTimeoutMs, onMissing });
    } catch (err) {
      // The run closed with no relay stream: expired, or the run was admitted in relay mode 'result'
      // (Redis was down then) and this attempt, made once Redis was back, looked for a stream.
      if (err instanceof RunClosedWithoutRelayError) {
        const result = await deps.workflows.closedResult(input.requestId);
        if (!result) throw new IdempotencyConflictError('expired');
        yield* await closedRunOutput(input, result);
        return;
      }
      if (!(err instanceof RelayTimeoutError) && !(err instanceof RelayUnavailableError)) throw err;
      // Billed for what the upstream call delivered, like a client that went away.
      await deps.relay.requestCancel(input.tenantId, input.requestId).catch(() => undefined);
      if (err instanceof RelayUnavailableError) {
        deps.log.warn({ requestId: input.requestId, err: err.message }, 'relay lost under a read in progress (Redis down or failing over)');
        throw new UpstreamFailedError('The response relay was interrupted.');
      }
      throw new UpstreamFailedError('The upstream call produced no output in time.');
    }
  }

  return { cancel, dropBody, storedOutput, closedRunOutput, relayed };
}

export type RequestOutput = ReturnType<typeof createRequestOutput>;
