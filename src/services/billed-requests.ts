/**
 * The gateway's side of one billed request, between the HTTP route and the request's
 * workflow: build its workflow input (price, tiktoken estimate, body store reference,
 * request hash, relay mode), store the request body, learn admission synchronously, and hand back the upstream output
 * to relay, whether it comes through the Redis Stream or, while Redis is down, through
 * the workflow itself. Refusals are domain errors (./request-errors) the API maps to
 * HTTP answers in one place.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from '../redis/client';
import { inputPriceOf, reservedCompletionTokens, worstCaseCostMicros, worstCaseReservationMicros, type ModelPrice } from '../billing/pricing';
import { countDefinitionTokens, countPromptTokens } from '../billing/token-count';
import { countEmbeddingInputTokens, type EmbeddingsRequest } from '../openai/embeddings';
import { countResponsesInputTokens, type ResponsesRequest } from '../openai/responses';
import type { ModelPriceRepository } from '../db/model-price-repository';
import type { FramedPlaintext } from '../codec/body-cipher';
import type { RequestBodyRepository } from '../db/request-body-repository';
import type { Logger } from '../log';
import { requestedChoices, requestedMaxTokens, type ChatCompletionRequest } from '../openai/chat-request';
import { RelayTimeoutError, RelayUnavailableError, type RelayEntry, type RequestRelay } from '../redis/request-relay';
import type { BilledRequestClient } from '../workflows/client';
import { BilledOperation, type AdmissionDecision, type BilledRequestInput, type BilledRequestResult } from '../workflows/definitions';
import { ConversationOwnedError, type ConversationRepository } from '../db/conversation-repository';
import {
  AdmissionDeniedError,
  AdmissionUnavailableError,
  ConversationConflictError,
  IdempotencyConflictError,
  InvalidConversationIdError,
  InvalidIdempotencyKeyError,
  ModelNotPricedError,
  UpstreamFailedError,
} from './request-errors';

/** Idempotency-Key: what clients may send (the OpenAI SDKs send UUID-like strings). */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,255}$/;

/** X-Conversation-Id (and `/admin/locks/:conversation_id`, src/api/schemas.ts): no braces, since the id becomes a Redis hash tag. */
export const CONVERSATION_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * The request id: derived from the tenant and its Idempotency-Key (so two tenants
 * never collide and a retry maps to the same workflow), else random.
 */
export function requestIdFor(tenantId: string, idempotencyKey: string | undefined): string {
  if (idempotencyKey === undefined) return `req_${randomUUID().replace(/-/g, '')}`;
  return `idem_${createHash('sha256').update(`${tenantId}\n${idempotencyKey}`).digest('hex').slice(0, 40)}`;
}

/** True for a request id derived from an Idempotency-Key: a retry of the client reaches the same workflow. */
export function isIdempotentRequestId(requestId: string): boolean {
  return requestId.startsWith('idem_');
}

/** Who the request is billed to, and the headers that shape it. */
export interface BilledRequestOrigin {
  tenantId: string;
  apiKeyId: string;
  idempotencyKey?: string;
  conversationId?: string;
}

export interface BilledRequestsDeps {
  prices: Pick<ModelPriceRepository, 'find'>;
  workflows: Pick<BilledRequestClient, 'admit' | 'awaitOutput' | 'isFinished' | 'closedResult'>;
  /** The body store: the request body goes there, not into the workflow input. */
  bodies: Pick<RequestBodyRepository, 'put' | 'get' | 'delete'>;
  /** Conversations (X-Conversation-Id): a request claims its conversation for its tenant before it runs. */
  conversations?: Pick<ConversationRepository, 'claim'>;
  relay: Pick<RequestRelay, 'entries' | 'read' | 'requestCancel'>;
  /** Admission uses the Redis relay only while Redis answers. */
  redis: Pick<Redis, 'status'>;
  log: Pick<Logger, 'warn' | 'error'>;
  /** How long to wait for the next relayed output before giving up (502). @default 120000 */
  relayIdleTimeoutMs?: number;
  /** IMAGE_WORST_CASE_TOKENS: an image of unknown size in the estimate. @default the tile rule's worst case */
  imageWorstCaseTokens?: number;
}

/** Internal: the relay read found no stream and the run has closed. */
class RunClosedWithoutRelayError extends Error {}

function denial(decision: Extract<AdmissionDecision, { admitted: false }>): Error {
  return decision.reason === 'unavailable' ? new AdmissionUnavailableError() : new AdmissionDeniedError(decision.reason);
}

export function createBilledRequests(deps: BilledRequestsDeps) {
  /** Stops the upstream call of a request nobody reads any more (billed for what it delivered). */
  function cancel(input: BilledRequestInput): void {
    if (input.relayMode !== 'redis') return;
    deps.relay.requestCancel(input.tenantId, input.requestId).catch((err: unknown) => deps.log.warn({ requestId: input.requestId, err }, 'could not relay the client cancel'));
  }

  /**
   * What a client arriving after the run closed gets: the relay stream, or in relay mode 'result'
   * the output no attempt read yet (the body store; its first attempt was told 503), or a voided
   * run's failure again (nothing was billed). Otherwise the output has expired: 409.
   */
  /** Deletes a stored body; a failure is logged (the body store's expiry removes it later). */
  function dropBody(requestId: string, kind: 'request' | 'output'): Promise<void> {
    return deps.bodies.delete(requestId, kind).catch((err: unknown) => deps.log.warn({ requestId, kind, err }, 'could not delete a stored body'));
  }

  async function closedRunOutput(input: BilledRequestInput, result: BilledRequestResult): Promise<RelayEntry[]> {
    const { requestId, tenantId } = input;
    const entries = input.relayMode === 'redis' ? await deps.relay.entries(tenantId, requestId) : [];
    if (entries.length > 0) return entries;
    const stored = result.upstream?.outputRef ? await deps.bodies.get(requestId, 'output') : undefined;
    if (stored) {
      // Delivered now; a conversation's exchange is appended from it too, so that one is left to expire.
      if (input.conversationId === undefined) await dropBody(requestId, 'output');
      return JSON.parse(stored.toString('utf8')) as RelayEntry[];
    }
    if (result.settlement?.status === 'voided') throw new UpstreamFailedError();
    deps.log.warn({ requestId, relayMode: input.relayMode }, 'finished request: its output has expired');
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

  /** The price of `model`; an unpriced model is a ModelNotPricedError (never billed at 0). */
  async function priceOf(model: string): Promise<ModelPrice> {
    const price = await deps.prices.find(model);
    if (!price) throw new ModelNotPricedError(model);
    return price;
  }

  /** The workflow input of an embeddings or responses request: what chat's has, with the operation named. */
  function operationInput(
    operation: Exclude<BilledOperation, 'chat'>,
    origin: BilledRequestOrigin,
    requestId: string,
    price: ModelPrice,
    fields: { promptTokens: number; maxOutputTokens: number; stream: boolean; requestHash: string },
  ): BilledRequestInput {
    const { promptTokens, maxOutputTokens, stream, requestHash } = fields;
    return {
      requestId,
      tenantId: origin.tenantId,
      apiKeyId: origin.apiKeyId,
      model: price.model,
      operation,
      price: inputPriceOf(price),
      promptTokens,
      maxOutputTokens,
      reservedMicros: worstCaseCostMicros(price, promptTokens, maxOutputTokens),
      stream,
      // The Responses stream carries its usage in response.completed: nothing of the gateway's is added.
      includeUsage: false,
      relayMode: deps.redis.status === 'ready' ? 'redis' : 'result',
      bodyRef: { requestId },
      requestHash,
    };
  }

  return {
    /** The request id of a request from `origin` (known before anything else, so every answer can carry it). */
    requestId(origin: BilledRequestOrigin): string {
      if (origin.idempotencyKey !== undefined && !IDEMPOTENCY_KEY_PATTERN.test(origin.idempotencyKey)) throw new InvalidIdempotencyKeyError();
      if (origin.conversationId !== undefined && !CONVERSATION_ID_PATTERN.test(origin.conversationId)) throw new InvalidConversationIdError();
      return requestIdFor(origin.tenantId, origin.idempotencyKey);
    },

    /**
     * The workflow input of a chat completion; an unpriced model is a ModelNotPricedError.
     * `requestHash`: hex SHA-256 of the client's raw bytes, for the Idempotency-Key check (no re-serialisation).
     */
    async prepare(origin: BilledRequestOrigin, requestId: string, body: ChatCompletionRequest, requestHash: string): Promise<BilledRequestInput> {
      const price = await deps.prices.find(body.model);
      if (!price) throw new ModelNotPricedError(body.model);
      if (origin.conversationId !== undefined && deps.conversations) {
        // Before the edge and the workflow: another tenant's conversation id changes nothing (409).
        try {
          await deps.conversations.claim(origin.conversationId, origin.tenantId);
        } catch (err) {
          if (err instanceof ConversationOwnedError) throw new ConversationConflictError();
          throw err;
        }
      }
      // The worst case (issue 11, docs/pricing.md): messages (images by the tile rule), tool and
      // response-format definitions, and every one of the n choices at the output cap.
      const promptTokens = countPromptTokens(body.messages, body.model, { imageWorstCaseTokens: deps.imageWorstCaseTokens })
        + countDefinitionTokens(body, body.model);
      const requestedMax = requestedMaxTokens(body);
      const maxOutputTokens = reservedCompletionTokens(price, requestedMax);
      const choices = requestedChoices(body);
      return {
        requestId,
        tenantId: origin.tenantId,
        apiKeyId: origin.apiKeyId,
        model: body.model,
        price: inputPriceOf(price),
        promptTokens,
        maxOutputTokens,
        ...(choices > 1 ? { choices } : {}),
        reservedMicros: worstCaseReservationMicros(price, promptTokens, requestedMax, choices),
        stream: body.stream === true,
        includeUsage: body.stream === true && body.stream_options?.include_usage === true,
        relayMode: deps.redis.status === 'ready' ? 'redis' : 'result',
        ...(origin.conversationId ? { conversationId: origin.conversationId } : {}),
        bodyRef: { requestId },
        requestHash,
      };
    },

    /**
     * The workflow input of an embeddings request (issue 11): billed by input tokens only, so the
     * reservation is the price of the input's tokens (tiktoken's count, a token array's length) and
     * no output is reserved. JSON only: it never streams.
     */
    async prepareEmbeddings(origin: BilledRequestOrigin, requestId: string, body: EmbeddingsRequest, requestHash: string): Promise<BilledRequestInput> {
      const price = await priceOf(body.model);
      const promptTokens = countEmbeddingInputTokens(body.input, body.model);
      return operationInput(BilledOperation.embeddings, origin, requestId, price, { promptTokens, maxOutputTokens: 0, stream: false, requestHash });
    },

    /**
     * The workflow input of a Responses API request (issue 11): the prompt estimate of its
     * instructions, input items and tool definitions, the output cap `min(max_output_tokens,
     * the model's max_output_tokens)` (what the upstream receives as `max_output_tokens`).
     */
    async prepareResponses(origin: BilledRequestOrigin, requestId: string, body: ResponsesRequest, requestHash: string): Promise<BilledRequestInput> {
      const price = await priceOf(body.model);
      const promptTokens = countResponsesInputTokens(body, { imageWorstCaseTokens: deps.imageWorstCaseTokens });
      const maxOutputTokens = reservedCompletionTokens(price, body.max_output_tokens ?? undefined);
      return operationInput(BilledOperation.responses, origin, requestId, price, { promptTokens, maxOutputTokens, stream: body.stream === true, requestHash });
    },

    cancel,

    /**
     * Starts (or attaches to) the request's workflow and learns admission; a refusal
     * throws. Returns the output to relay to the client: live entries for an admitted
     * request, the stored ones for a finished duplicate (never run twice).
     * `rawBody` goes into the body store first (a duplicate keeps the first body), handed over
     * once so nothing here keeps it while the request runs; a request that will not run drops it again.
     */
    async admit(input: BilledRequestInput, rawBody: { take(): Buffer | FramedPlaintext }, signal: AbortSignal): Promise<AsyncIterable<RelayEntry> | RelayEntry[]> {
      const { requestId, tenantId } = input;
      const drop = (kind: 'request' | 'output'): Promise<void> => dropBody(requestId, kind);
      let admitted;
      try {
        await deps.bodies.put({ requestId, tenantId, kind: 'request', body: () => rawBody.take() });
        admitted = await deps.workflows.admit(input);
      } catch (err) {
        deps.log.error({ requestId: input.requestId, tenantId: input.tenantId, err: (err as Error).message }, 'admission failed');
        // The run may exist even so (Temporal answered too late to attach): it would admit and bill on
        // its own. A client with an Idempotency-Key retries into it; one without cannot, since its
        // retry is another request, so the run is asked to stop before its upstream call and is voided.
        if (!isIdempotentRequestId(requestId)) cancel(input);
        throw new AdmissionUnavailableError();
      }
      if (admitted.kind === 'finished') {
        // A finished request id: replay its output, never run it again.
        await drop('request');
        const { result } = admitted;
        if (!result.admission.admitted) throw denial(result.admission);
        return closedRunOutput(input, result);
      }
      const { decision } = admitted;
      // The same Idempotency-Key must mean the same request: another body is refused, nothing billed.
      if (decision.requestHash !== undefined && decision.requestHash !== input.requestHash) throw new IdempotencyConflictError('different_body');
      if (!decision.admitted) {
        await drop('request');
        throw denial(decision);
      }
      if (input.relayMode === 'redis') return relayed(input, signal);
      const outcome = await deps.workflows.awaitOutput(input.requestId);
      if (outcome?.outputRef) {
        // The output is in the body store, not in history: read it, then drop it (delivered). A
        // conversation's exchange is appended from it too, later: that one is left to expire.
        const stored = await deps.bodies.get(requestId, 'output');
        if (!stored) throw new UpstreamFailedError();
        if (input.conversationId === undefined) await drop('output');
        return JSON.parse(stored.toString('utf8')) as RelayEntry[];
      }
      if (!outcome?.relayed) throw new UpstreamFailedError();
      return outcome.relayed as RelayEntry[];
    },
  };
}

export type BilledRequests = ReturnType<typeof createBilledRequests>;
