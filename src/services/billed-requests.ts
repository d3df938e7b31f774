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
import type { RelayEntry, RequestRelay } from '../redis/request-relay';
import type { BilledRequestClient } from '../workflows/client';
import { BilledOperation, type AdmissionDecision, type BilledRequestInput } from '../workflows/definitions';
import { createRequestOutput } from './request-output';
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

function denial(decision: Extract<AdmissionDecision, { admitted: false }>): Error {
  return decision.reason === 'unavailable' ? new AdmissionUnavailableError() : new AdmissionDeniedError(decision.reason);
}

export function createBilledRequests(deps: BilledRequestsDeps) {
  const { cancel, dropBody, storedOutput, closedRunOutput, relayed } = createRequestOutput(deps);

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
        // The output is in the body store, not in history.
        const stored = await storedOutput(input);
        if (!stored) throw new UpstreamFailedError();
        return stored;
      }
      if (!outcome?.relayed) throw new UpstreamFailedError();
      return outcome.relayed as RelayEntry[];
    },
  };
}

export type BilledRequests = ReturnType<typeof createBilledRequests>;
