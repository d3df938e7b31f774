/**
 * POST /v1/chat/completions: the gateway route. It parses the body, lets the
 * billed-request service build the workflow input, and runs it through the path every
 * billed route shares (../billed-route.ts: edge, admission, relay as JSON or SSE). A
 * client that goes away cancels the upstream call.
 */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { EdgeGate } from '../../edge/edge-gate';
import { chatCompletionRequestSchema, type ChatCompletionRequest } from '../../openai/chat-request';
import type { BilledRequests } from '../../services/billed-requests';
import { billedRouteRequest, serveBilledRequest } from '../billed-route';

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
    // The parsed body is a second copy of every prompt and only the estimate reads it: it is
    // dropped (here and from the request) before anything waits on the workflow.
    let body: ChatCompletionRequest | undefined = chatCompletionRequestSchema.parse(req.body);
    const route = billedRouteRequest(deps, req, res);
    const input = await deps.requests.prepare(route.origin, route.requestId, body, route.rawBody.sha256);
    body = undefined;
    await serveBilledRequest(deps, req, res, input, route);
  });

  return router;
}
