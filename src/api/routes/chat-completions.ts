/**
 * POST /v1/chat/completions: the gateway route. It parses the body, lets the
 * billed-request service build the workflow input, passes the edge (quota, budget,
 * rate limits, parallel cap and the process's in-flight bound: refusals answer at
 * once, no workflow started), learns admission from the workflow (429, 409, 503),
 * and writes the relayed output as JSON or SSE. A client that goes away cancels the
 * upstream call.
 */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { EdgeGate } from '../../edge/edge-gate';
import { chatCompletionRequestSchema, type ChatCompletionRequest } from '../../openai/chat-request';
import type { BilledRequests } from '../../services/billed-requests';
import { apiKeyAuthOf } from '../auth';
import { RawRequestBody, takeRawBody } from '../chat-body';
import { writeRateLimitHeaders } from '../rate-limit-headers';
import { writeRelayedResponse } from '../relay-response';

export const CHAT_COMPLETIONS_PATH = '/v1/chat/completions';

export interface ChatCompletionsDeps {
  authenticate: RequestHandler;
  /** The JSON body parser of this route (../chat-body.ts: up to MAX_REQUEST_BODY_BYTES, raw bytes kept), run after authentication. */
  parseBody: RequestHandler;
  requests: BilledRequests;
  edge: EdgeGate;
}

export function chatCompletionsRouter(deps: ChatCompletionsDeps): Router {
  const router = Router();

  router.post(CHAT_COMPLETIONS_PATH, deps.authenticate, deps.parseBody, async (req: Request, res: Response) => {
    const { tenantId, apiKeyId, limits } = apiKeyAuthOf(res);
    // The parsed body is a second copy of every prompt and only the estimate reads it: it is
    // dropped (here and from the request) before anything waits on the workflow.
    let body: ChatCompletionRequest | undefined = chatCompletionRequestSchema.parse(req.body);
    const origin = { tenantId, apiKeyId, idempotencyKey: req.get('Idempotency-Key'), conversationId: req.get('X-Conversation-Id') };
    const requestId = deps.requests.requestId(origin);
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    // The exact bytes the client sent (../chat-body.ts); a body parsed elsewhere is serialised once.
    const rawBody = takeRawBody(req) ?? new RawRequestBody(Buffer.from(JSON.stringify(req.body), 'utf8'));
    const input = await deps.requests.prepare(origin, requestId, body, rawBody.sha256);
    body = undefined;
    req.body = undefined;
    const pass = await deps.edge.enter(input, limits, (decision) => writeRateLimitHeaders(res, decision));

    // Listening before admission: a client gone while admission runs still cancels the upstream call.
    const clientGone = new AbortController();
    res.on('close', () => {
      if (res.writableFinished) return;
      clientGone.abort();
      deps.requests.cancel(input);
    });
    let realTokens: number | undefined;
    try {
      ({ totalTokens: realTokens } = await writeRelayedResponse(res, input, await deps.requests.admit(input, rawBody, clientGone.signal)));
    } catch (err) {
      // Refused or failed before any output: nothing was billed, so nothing counts against tokens per minute.
      if (!res.headersSent) realTokens = 0;
      throw err;
    } finally {
      pass.leave(realTokens);
    }
  });

  return router;
}
