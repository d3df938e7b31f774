/**
 * POST /v1/chat/completions: the gateway route. Validates, estimates the
 * worst-case cost, learns admission synchronously from the request's workflow
 * (429 at once when denied), then relays the upstream output to the client as
 * JSON or SSE. A client that goes away cancels the upstream call.
 */
import { createHash } from 'node:crypto';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { Redis } from 'ioredis';
import { reservedCompletionTokens, worstCaseReservationMicros } from '../../billing/pricing';
import { countPromptTokens } from '../../billing/token-count';
import type { StoredModelPrice } from '../../db/model-price-repository';
import type { Logger } from '../../log';
import { RelayTimeoutError, type RelayEntry, type RequestRelay } from '../../redis/request-relay';
import { formatSseEvent, SSE_DONE } from '../../openai/sse';
import type { AdmissionDecision, BilledRequestInput } from '../../workflows/definitions';
import { apiKeyAuthOf } from '../auth';
import {
  type AppError,
  BudgetExceededError,
  ConflictError,
  InsufficientQuotaError,
  InvalidApiKeyError,
  InvalidRequestError,
  ModelNotFoundError,
  ServiceUnavailableError,
  UpstreamError,
} from '../errors';
import { IDEMPOTENCY_KEY_PATTERN, requestIdFor, type RequestGateway } from '../gateway';
import { chatCompletionRequestSchema, requestedMaxTokens, type ChatCompletionRequest } from '../schemas';

export interface ChatCompletionsDeps {
  authenticate: RequestHandler;
  gateway: RequestGateway;
  relay: RequestRelay;
  /** Admission uses the Redis relay only while Redis answers. */
  redis: Pick<Redis, 'status'>;
  prices: { find(model: string): Promise<StoredModelPrice | null> };
  log: Logger;
  /** How long the API waits for the first relayed output. @default 120000 */
  relayIdleTimeoutMs?: number;
}

const EXPIRED_REPLAY = 'This Idempotency-Key was already used for a completed request whose output has expired.';

function denial(decision: Extract<AdmissionDecision, { admitted: false }>): AppError {
  switch (decision.reason) {
    case 'insufficient_quota':
      return new InsufficientQuotaError();
    case 'budget_exceeded':
      return new BudgetExceededError();
    case 'unavailable':
      return new ServiceUnavailableError('Admission is unavailable; retry with the same Idempotency-Key.', 1);
    default:
      return new InvalidApiKeyError();
  }
}

/** The upstream body: our output cap replaces the client's, stream options are ours. */
function upstreamBody(req: ChatCompletionRequest, maxOutputTokens: number): Record<string, unknown> {
  const { stream: _stream, stream_options: _options, max_completion_tokens, max_tokens: _max, ...rest } = req;
  return max_completion_tokens !== undefined
    ? { ...rest, max_completion_tokens: maxOutputTokens }
    : { ...rest, max_tokens: maxOutputTokens };
}

/** Writes relayed entries to the client: JSON for a plain request, SSE for a stream. */
async function respond(res: Response, input: BilledRequestInput, entries: AsyncIterable<RelayEntry> | Iterable<RelayEntry>): Promise<void> {
  let streaming = false;
  let last: { id?: unknown; created?: unknown; model?: unknown } = {};
  const startStream = (): void => {
    if (streaming) return;
    streaming = true;
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('Connection', 'keep-alive');
    res.flushHeaders();
  };
  for await (const entry of entries) {
    if (res.destroyed) return;
    switch (entry.type) {
      case 'response':
        res.status(200).json(entry.data);
        return;
      case 'chunk':
        startStream();
        last = entry.data as typeof last;
        res.write(formatSseEvent(entry.data));
        break;
      case 'usage':
        if (input.includeUsage) {
          startStream();
          res.write(formatSseEvent({ id: last.id, object: 'chat.completion.chunk', created: last.created, model: last.model ?? input.model, choices: [], usage: entry.data }));
        }
        break;
      case 'error':
        if (!streaming) throw new UpstreamError(entry.data.message);
        res.write(formatSseEvent({ error: { message: entry.data.message, type: entry.data.type, code: entry.data.code } }));
        res.end(formatSseEvent(SSE_DONE));
        return;
      case 'done':
        startStream();
        res.end(formatSseEvent(SSE_DONE));
        return;
    }
  }
  if (!res.headersSent) throw new UpstreamError('The upstream call ended without output.');
  res.end();
}

export function chatCompletionsRouter(deps: ChatCompletionsDeps): Router {
  const router = Router();

  router.post('/v1/chat/completions', deps.authenticate, async (req: Request, res: Response) => {
    const auth = apiKeyAuthOf(res);
    const parsed = chatCompletionRequestSchema.safeParse(req.body);
    if (!parsed.success) throw parsed.error;
    const body = parsed.data;
    const idempotencyKey = req.get('Idempotency-Key');
    if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY_PATTERN.test(idempotencyKey)) {
      throw new InvalidRequestError('Idempotency-Key must be 1-255 printable ASCII characters.', 'Idempotency-Key');
    }
    const requestId = requestIdFor(auth.tenantId, idempotencyKey);
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);

    const price = await deps.prices.find(body.model);
    if (!price) throw new ModelNotFoundError(body.model);
    const promptTokens = countPromptTokens(body.messages, body.model);
    const requestedMax = requestedMaxTokens(body);
    const maxOutputTokens = reservedCompletionTokens(price, requestedMax);
    const conversationId = req.get('X-Conversation-Id');
    const input: BilledRequestInput = {
      requestId,
      tenantId: auth.tenantId,
      apiKeyId: auth.apiKeyId,
      model: body.model,
      price: { model: price.model, inputPriceMicrosPerMtok: price.inputPriceMicrosPerMtok, outputPriceMicrosPerMtok: price.outputPriceMicrosPerMtok, maxOutputTokens: price.maxOutputTokens },
      promptTokens,
      maxOutputTokens,
      reservedMicros: worstCaseReservationMicros(price, promptTokens, requestedMax),
      stream: body.stream === true,
      includeUsage: body.stream === true && body.stream_options?.include_usage === true,
      relayMode: deps.redis.status === 'ready' ? 'redis' : 'result',
      ...(conversationId ? { conversationId } : {}),
      body: upstreamBody(body, maxOutputTokens),
      requestHash: createHash('sha256').update(JSON.stringify(body)).digest('hex'),
    };

    // Listening before admission: a client gone while admission runs still cancels the upstream call.
    const clientGone = new AbortController();
    res.on('close', () => {
      if (res.writableFinished) return;
      clientGone.abort();
      if (input.relayMode === 'redis') {
        deps.relay.requestCancel(auth.tenantId, requestId).catch((err: unknown) => deps.log.warn({ requestId, err }, 'could not relay the client cancel'));
      }
    });

    let admitted;
    try {
      admitted = await deps.gateway.admit(input);
    } catch (err) {
      deps.log.error({ requestId, tenantId: auth.tenantId, err: (err as Error).message }, 'admission failed');
      throw new ServiceUnavailableError('Admission is unavailable; retry with the same Idempotency-Key.', 1);
    }
    if (admitted.kind === 'finished') {
      // A finished request id: replay its output if the relay still has it, never run it again.
      const { result } = admitted;
      if (!result.admission.admitted) throw denial(result.admission);
      const entries = input.relayMode === 'redis' ? await deps.relay.entries(auth.tenantId, requestId) : [];
      if (entries.length === 0) throw new ConflictError(EXPIRED_REPLAY);
      await respond(res, input, entries);
      return;
    }
    const { decision } = admitted;
    // The same Idempotency-Key must mean the same request: another body is refused, nothing billed.
    if (decision.requestHash !== undefined && decision.requestHash !== input.requestHash) {
      throw new ConflictError('This Idempotency-Key was already used with a different request body.');
    }
    if (!decision.admitted) throw denial(decision);

    if (input.relayMode === 'redis') {
      // A repeated Idempotency-Key of a request that finished long ago: its relay has expired, nothing will come.
      const onMissing = async (): Promise<void> => {
        if (await deps.gateway.isFinished(requestId)) throw new ConflictError(EXPIRED_REPLAY);
      };
      try {
        await respond(res, input, deps.relay.read(auth.tenantId, requestId, { signal: clientGone.signal, idleTimeoutMs: deps.relayIdleTimeoutMs, onMissing }));
      } catch (err) {
        if (!(err instanceof RelayTimeoutError)) throw err;
        // Nobody will read what comes later: stop the upstream call (billed for what it delivered).
        await deps.relay.requestCancel(auth.tenantId, requestId).catch(() => undefined);
        throw new UpstreamError('The upstream call produced no output in time.');
      }
      return;
    }
    const outcome = await deps.gateway.awaitOutput(requestId);
    if (!outcome?.relayed) throw new UpstreamError();
    await respond(res, input, outcome.relayed as RelayEntry[]);
  });

  return router;
}
