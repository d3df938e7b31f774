/**
 * POST /v1/responses (issue 11): OpenAI's Responses API, JSON or SSE, through the same durable
 * lifecycle as chat completions (../billed-route.ts). The reservation is the prompt estimate plus
 * the output cap (`max_output_tokens`, capped at the model's); the settlement bills the usage of
 * `response.completed`, or, for a stream cut short, tiktoken's count of the text delivered.
 * Output is relayed exactly as the upstream sent it (../relay-responses.ts).
 */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { EdgeGate } from '../../edge/edge-gate';
import { responsesRequestSchema, type ResponsesRequest } from '../../openai/responses';
import type { BilledRequests } from '../../services/billed-requests';
import { billedRouteRequest, serveBilledRequest } from '../billed-route';
import { InvalidRequestError } from '../errors';

export const RESPONSES_PATH = '/v1/responses';

export interface ResponsesDeps {
  authenticate: RequestHandler;
  /** The body parser of the billed routes (../chat-body.ts), run after authentication. */
  parseBody: RequestHandler;
  requests: BilledRequests;
  edge: EdgeGate;
}

/**
 * X-Conversation-Id appends a chat exchange to a conversation (docs/conversations.md); an
 * embeddings or Responses request has no such exchange (the Responses API keeps its own state
 * with previous_response_id), so the header is refused rather than silently ignored.
 */
export function refuseConversationHeader(req: Request, path: string): void {
  if (req.get('X-Conversation-Id') !== undefined) throw new InvalidRequestError(`X-Conversation-Id is not supported on ${path}; it applies to /v1/chat/completions only.`);
}

export function responsesRouter(deps: ResponsesDeps): Router {
  const router = Router();

  router.post(RESPONSES_PATH, deps.authenticate, deps.parseBody, async (req: Request, res: Response) => {
    let body: ResponsesRequest | undefined = responsesRequestSchema.parse(req.body);
    refuseConversationHeader(req, RESPONSES_PATH);
    const route = billedRouteRequest(deps, req, res);
    const input = await deps.requests.prepareResponses(route.origin, route.requestId, body, route.rawBody.sha256);
    body = undefined;
    await serveBilledRequest(deps, req, res, input, route);
  });

  return router;
}
