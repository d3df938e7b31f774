/**
 * UpstreamCallStep: calls the upstream channel, relays its output to the API
 * process and accumulates the usage to bill (StreamTokenAccumulator, M6).
 *
 * - Heartbeats on a timer, so a crashed worker's attempt is retried after the
 *   heartbeat timeout. A retry first reads the relay: once output reached the
 *   client the upstream is never called again; the retry bills what was delivered
 *   and ends the client's stream with an error.
 * - A client disconnect (a cancel marker the API sets) or a Temporal cancellation
 *   aborts the upstream HTTP request.
 * - Upstream errors before any output are retryable (Temporal retries) unless the
 *   upstream rejected the request (4xx other than 429).
 * - Channels (issue 10): the route RoutingStep recorded names a first channel and fallbacks.
 *   A channel that fails before its first byte counts against its health and the same
 *   attempt goes on with the next one; never once output was relayed. A retried attempt
 *   starts again on the route's first channel. After a successful call the conversation's
 *   routing affinity learns which channels failed and which served (M8.3).
 * - Operations (issue 11): embeddings and the Responses API take the same path; only the call
 *   itself and how its usage is read differ (./upstream-operations.ts).
 * - The request body is read from the body store (issue 8: never in history); a body
 *   that is gone fails the call for good (FailureType.requestBodyMissing): settlement
 *   voids, the client gets a 502. In relay mode 'result' the output goes to the body
 *   store as well and the outcome carries only its reference.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import { StreamTokenAccumulator, type ChatCompletionChunkLike } from '../billing/stream-token-accumulator';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import type { RelayEntry, RequestRelay } from '../redis/request-relay';
import { UpstreamHttpError, isUpstreamCallError } from '../upstream/errors';
import { upstreamBody, type ChatCompletionRequest } from '../openai/chat-request';
import { serializedUpstreamRequest } from '../openai/serialized-request';
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { ChatCompletion, ChatCompletionChunk } from '../openai/chat-response';
import type { UpstreamChatRequest, UpstreamProvider, UpstreamRequestBody } from '../upstream/provider';
import { BilledOperation, operationOf, type BilledRequestInput, type RouteDecision, type UpstreamOutcome } from '../workflows/definitions';
import { callOperation, operationRequestBody, type NonChatOperation } from './upstream-operations';
import type { ChannelRouter } from '../channels/channel-router';
import { FailureType } from '../workflows/failure-types';
import { CLIENT_CLOSED_ERROR, INTERRUPTED_ERROR, UPSTREAM_FAILED_ERROR, endRelayIfOpen, hasOutput, outcomeFromRelay, terminalOf, upstreamFailure, usageEstimate } from './relay-recovery';

export interface UpstreamCallDeps {
  /** Providers by channel name, when there is no `router` (or it does not know the channel). */
  providers: Readonly<Record<string, UpstreamProvider>>;
  /** The channels' providers, their health (failures before the first byte) and the affinity update after a success (M8.3). */
  router?: Pick<ChannelRouter, 'providerFor' | 'reportFailure' | 'recordSuccess'>;
  relay: RequestRelay;
  /** The body store: the request body (read), the output in relay mode 'result' (written). */
  bodies: Pick<RequestBodyRepository, 'get' | 'put'>;
  metrics: BillingMetrics;
  log: Logger;
  /** How often to heartbeat and look for a client cancel. @default 250 */
  pollIntervalMs?: number;
}

function isUsageOnly(chunk: ChatCompletionChunk): boolean {
  return (chunk.choices?.length ?? 0) === 0;
}

/** The client gets usage once, as the gateway's own final usage chunk (M6: the billed figures). */
function withoutUsage(chunk: ChatCompletionChunk): ChatCompletionChunk {
  const { usage: _usage, ...rest } = chunk;
  return rest;
}

function upstreamErrorBody(err: unknown): ReturnType<typeof upstreamFailure> {
  return err instanceof UpstreamHttpError ? upstreamFailure(`upstream answered HTTP ${err.status}`) : { ...UPSTREAM_FAILED_ERROR };
}

function rejectedByUpstream(err: unknown): boolean {
  return err instanceof UpstreamHttpError && err.status >= 400 && err.status < 500 && err.status !== 429 && err.status !== 408;
}

export function createUpstreamCallStep(deps: UpstreamCallDeps) {
  const pollMs = deps.pollIntervalMs ?? 250;

  return async function upstreamCallStep(input: BilledRequestInput, route: string | RouteDecision): Promise<UpstreamOutcome> {
    const ctx = Context.current();
    const { tenantId, requestId } = input;
    const useRelay = input.relayMode === 'redis';
    // A run recorded before channels carries a bare channel name.
    const candidates = typeof route === 'string' ? [route] : [route.channel, ...route.fallbacks];
    /** The channel of this attempt: the first candidate, then each fallback after a failure before the first byte. */
    let channel = candidates[0]!;
    const failedChannels: string[] = [];
    const providerOf = async (id: string): Promise<UpstreamProvider | undefined> => (await deps.router?.providerFor(id)) ?? deps.providers[id];

    if (useRelay) {
      const earlier = await deps.relay.entries(tenantId, requestId);
      if (hasOutput(earlier) || terminalOf(earlier)) {
        const outcome = outcomeFromRelay(input, channel, earlier);
        await endRelayIfOpen(deps.relay, input, earlier);
        deps.log.warn({ requestId, tenantId, attempt: ctx.info.attempt, status: outcome.status }, 'upstream attempt resumed after output was delivered: not calling upstream again');
        return outcome;
      }
    }

    const firstProvider = await providerOf(channel);
    if (!firstProvider) throw ApplicationFailure.nonRetryable(`no upstream channel "${channel}"`, 'UnknownChannelError');
    let provider: UpstreamProvider = firstProvider;
    // A run started before the body store carries `body` and no bodyRef: its body is not in the store either.
    const ref = (input as Partial<BilledRequestInput>).bodyRef;
    const stored = ref ? await deps.bodies.get(ref.requestId, 'request') : undefined;
    if (!stored) {
      deps.log.error({ requestId, tenantId }, 'request body missing from the body store: the request fails, nothing billed');
      throw ApplicationFailure.nonRetryable(`request body of ${requestId} is missing`, FailureType.requestBodyMissing);
    }
    // Validated by the API before it was stored; our output cap and stream options replace the client's.
    // Spliced from the stored bytes (no parse, no re-serialisation), unless a repeated member forbids it.
    const operation = operationOf(input);
    const request: { operation: 'chat'; body: UpstreamChatRequest } | { operation: NonChatOperation; body: UpstreamRequestBody } = operation === BilledOperation.chat
      ? {
          operation,
          body: serializedUpstreamRequest(stored, input.maxOutputTokens)
            ?? (upstreamBody(JSON.parse(stored.toString('utf8')) as ChatCompletionRequest, input.maxOutputTokens) as unknown as ChatCompletionRequest),
        }
      : { operation, body: operationRequestBody(operation, stored, input.maxOutputTokens) };

    let acc = new StreamTokenAccumulator({ model: input.model, promptTokens: input.promptTokens });
    const abort = new AbortController();
    let clientGone = false;
    let delivered = 0;
    const collected: RelayEntry[] = [];
    const writer = useRelay ? deps.relay.writer(tenantId, requestId) : undefined;
    const emit = (entry: RelayEntry): void => {
      if (writer) writer.push(entry);
      else collected.push(entry);
    };
    const onTemporalCancel = (): void => abort.abort(new Error('activity cancelled'));
    ctx.cancellationSignal.addEventListener('abort', onTemporalCancel);
    const tick = async (): Promise<void> => {
      ctx.heartbeat({ delivered });
      if (useRelay && !abort.signal.aborted && (await deps.relay.isCancelRequested(tenantId, requestId))) {
        clientGone = true;
        abort.abort(new Error('client disconnected'));
      }
    };
    const ticker = setInterval(() => void tick().catch(() => undefined), pollMs);
    if (useRelay && (await deps.relay.isCancelRequested(tenantId, requestId))) {
      clientGone = true;
      abort.abort(new Error('client disconnected'));
    }

    const started = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - started) / 1e9;
    let ttfbRecorded = false;
    const firstByte = (): void => {
      if (!ttfbRecorded) deps.metrics.upstreamTtfb.observe(seconds());
      ttfbRecorded = true;
    };
    const usageOf = (): UpstreamOutcome => {
      const usage = acc.finalize(usageEstimate(input));
      return { status: 'completed', promptTokens: usage.promptTokens, completionTokens: usage.completionTokens, tokenSource: usage.source, channel };
    };
    const finish = async (outcome: UpstreamOutcome, metricOutcome: string): Promise<UpstreamOutcome> => {
      await writer?.flush();
      deps.metrics.upstreamDuration.observe({ model: input.model, outcome: metricOutcome }, seconds());
      deps.metrics.upstreamTokens.inc({ model: input.model, kind: 'prompt' }, outcome.promptTokens);
      deps.metrics.upstreamTokens.inc({ model: input.model, kind: 'completion' }, outcome.completionTokens);
      return handOver(outcome);
    };
    /** Relay mode 'result': the output goes to the body store, the outcome (in history) carries its reference. */
    const handOver = async (outcome: UpstreamOutcome): Promise<UpstreamOutcome> => {
      if (useRelay) return outcome;
      await deps.bodies.put({ requestId, tenantId, kind: 'output', body: Buffer.from(JSON.stringify(collected), 'utf8') });
      return { ...outcome, outputRef: { requestId } };
    };

    /**
     * M8.3: the conversation's affinity changes only after a successful call; a failure to save it fails nothing.
     * Saved before the client's last entries are relayed, so the conversation's next turn routes by it.
     */
    const learn = async (outcome: UpstreamOutcome): Promise<UpstreamOutcome> => {
      if (outcome.status === 'completed' && input.conversationId && deps.router) {
        await deps.router.recordSuccess(input.conversationId, failedChannels, channel).catch((err: unknown) => {
          deps.log.warn({ requestId, tenantId, err: (err as Error).message }, 'routing affinity not updated');
        });
      }
      return outcome;
    };
    /** One call on the current channel: its output to the relay, its usage. */
    const callChannel = async (): Promise<UpstreamOutcome> => {
      if (request.operation !== BilledOperation.chat) {
        // Embeddings and the Responses API (issue 11): relayed as the upstream sent them, billed from their own usage.
        const relayOutput = (entry: RelayEntry): void => {
          emit(entry);
          delivered++;
        };
        await callOperation(request.operation, { provider, signal: abort.signal, acc, firstByte, relayOutput }, request.body, input.stream);
        const outcome = await learn(usageOf());
        emit({ type: 'done' });
        return await finish(outcome, 'ok');
      }
      const body = request.body;
      if (input.stream) {
        for await (const chunk of provider.stream(body, { signal: abort.signal })) {
          firstByte();
          acc.add(chunk as ChatCompletionChunkLike); // tool_calls are unknown[] on the wire; the accumulator checks each field
          if (isUsageOnly(chunk)) continue;
          emit({ type: 'chunk', data: withoutUsage(chunk) });
          delivered++;
        }
        const outcome = await learn(usageOf());
        emit({ type: 'usage', data: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.completionTokens, total_tokens: outcome.promptTokens + outcome.completionTokens } });
        emit({ type: 'done' });
        return await finish(outcome, 'ok');
      }
      const completion: ChatCompletion = await provider.complete(body, { signal: abort.signal });
      firstByte();
      for (const choice of completion.choices) acc.addText(choice.message?.content ?? '');
      if (completion.usage) acc.add({ choices: [], usage: completion.usage });
      const outcome = await learn(usageOf());
      emit({ type: 'response', data: { ...completion, usage: { prompt_tokens: outcome.promptTokens, completion_tokens: outcome.completionTokens, total_tokens: outcome.promptTokens + outcome.completionTokens } } });
      emit({ type: 'done' });
      delivered++;
      return await finish(outcome, 'ok');
    };
    /** A failure before the first byte moves to the next candidate channel; false when none is left (or it is no channel's fault). */
    const failOver = async (err: unknown): Promise<boolean> => {
      // A cancelled call (client gone, activity cancelled) is no channel's failure.
      if (clientGone || abort.signal.aborted || delivered > 0 || rejectedByUpstream(err)) return false;
      failedChannels.push(channel);
      await deps.router?.reportFailure(channel).catch(() => undefined);
      for (let next = candidates.indexOf(channel) + 1; next < candidates.length; next++) {
        const nextProvider = await providerOf(candidates[next]!);
        if (!nextProvider) continue;
        deps.log.warn({ requestId, tenantId, channel, next: candidates[next], err: (err as Error).message }, 'upstream channel failed before the first byte: trying the next channel');
        channel = candidates[next]!;
        provider = nextProvider;
        acc = new StreamTokenAccumulator({ model: input.model, promptTokens: input.promptTokens });
        return true;
      }
      return false;
    };

    try {
      if (clientGone) throw new Error('client disconnected before the upstream call');
      for (;;) {
        try {
          return await callChannel();
        } catch (err) {
          if (!(await failOver(err))) throw err;
        }
      }
    } catch (err) {
      if (clientGone) {
        emit({ type: 'error', data: { ...CLIENT_CLOSED_ERROR } });
        deps.log.info({ requestId, tenantId, delivered }, 'client disconnected: upstream call cancelled');
        // Delivered tokens are billed, the rest of the reservation refunded; nothing delivered voids it.
        const outcome: UpstreamOutcome = delivered > 0
          ? { ...usageOf(), status: 'client_cancelled' }
          : { ...usageOf(), status: 'failed_before_output', error: { ...CLIENT_CLOSED_ERROR } };
        return await finish(outcome, 'cancelled');
      }
      if (delivered > 0) {
        // No retry once output reached the client: bill what was delivered, end the stream with an error.
        emit({ type: 'error', data: { ...INTERRUPTED_ERROR } });
        deps.log.warn({ requestId, tenantId, delivered, err: (err as Error).message }, 'upstream failed after output');
        return await finish({ ...usageOf(), status: 'failed_after_output', error: { ...INTERRUPTED_ERROR } }, 'error');
      }
      deps.metrics.upstreamDuration.observe({ model: input.model, outcome: 'error' }, seconds());
      if (rejectedByUpstream(err)) {
        const error = upstreamErrorBody(err);
        emit({ type: 'error', data: error });
        await writer?.flush();
        return handOver({ ...usageOf(), status: 'failed_before_output', error });
      }
      deps.log.warn({ requestId, tenantId, attempt: ctx.info.attempt, err: (err as Error).message }, 'upstream failed before output: retrying');
      if (isUpstreamCallError(err) && !err.retryable) throw ApplicationFailure.nonRetryable(err.message, FailureType.upstreamRejected);
      throw err;
    } finally {
      clearInterval(ticker);
      ctx.cancellationSignal.removeEventListener('abort', onTemporalCancel);
    }
  };
}
