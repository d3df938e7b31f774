/**
 * POST /v1/embeddings (issue 11): OpenAI's embeddings endpoint, billed by input tokens, through
 * the same durable lifecycle as chat completions (../billed-route.ts): edge, admission with its
 * reservation, the workflow's upstream call and settlement, Idempotency-Key, disconnect and crash
 * guarantees. The answer is the upstream's JSON, relayed as it came.
 */
import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { EdgeGate } from '../../edge/edge-gate';
import { embeddingsRequestSchema, type EmbeddingsRequest } from '../../openai/embeddings';
import type { BilledRequests } from '../../services/billed-requests';
import { billedRouteRequest, serveBilledRequest } from '../billed-route';
import { refuseConversationHeader } from './responses';

export const EMBEDDINGS_PATH = '/v1/embeddings';

export interface EmbeddingsDeps {
  authenticate: RequestHandler;
  /** The body parser of the billed routes (../chat-body.ts), run after authentication. */
  parseBody: RequestHandler;
  requests: BilledRequests;
  edge: EdgeGate;
}

export function embeddingsRouter(deps: EmbeddingsDeps): Router {
  const router = Router();

  router.post(EMBEDDINGS_PATH, deps.authenticate, deps.parseBody, async (req: Request, res: Response) => {
    let body: EmbeddingsRequest | undefined = embeddingsRequestSchema.parse(req.body);
    refuseConversationHeader(req, EMBEDDINGS_PATH);
    const route = billedRouteRequest(deps, req, res);
    const input = await deps.requests.prepareEmbeddings(route.origin, route.requestId, body, route.rawBody.sha256);
    body = undefined;
    await serveBilledRequest(deps, req, res, input, route);
  });

  return router;
}
