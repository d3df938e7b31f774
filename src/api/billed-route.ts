/**
 * What every billed gateway route does once it has parsed its body into a workflow input
 * (chat completions, embeddings, the Responses API): pass the edge (quota, budget, rate
 * limits, parallel cap and the process's in-flight bound: refusals answer at once, no
 * workflow started), learn admission from the workflow (429, 409, 503), and write the
 * relayed output. A client that goes away cancels the upstream call. One function, so the
 * three endpoints cannot drift apart in what they guarantee.
 */
import type { Request, Response } from 'express';
import type { EdgeGate } from '../edge/edge-gate';
import type { RequestLimits } from '../edge/limits';
import type { BilledRequestOrigin, BilledRequests } from '../services/billed-requests';
import type { BilledRequestInput } from '../workflows/definitions';
import { apiKeyAuthOf } from './auth';
import { RawRequestBody, takeRawBody } from './chat-body';
import { writeRateLimitHeaders } from './rate-limit-headers';
import { writeRelayedResponse } from './relay-response';

export interface BilledRouteDeps {
  requests: BilledRequests;
  edge: EdgeGate;
}

/** The request as a route sees it before it builds the workflow input. */
export interface BilledRouteRequest {
  origin: BilledRequestOrigin;
  requestId: string;
  /** The exact bytes the client sent (./chat-body.ts). */
  rawBody: RawRequestBody;
  limits: RequestLimits;
}

/** The origin, request id and raw body of a parsed request; the request id goes on the response at once, so every answer carries it. */
export function billedRouteRequest(deps: Pick<BilledRouteDeps, 'requests'>, req: Request, res: Response): BilledRouteRequest {
  const { tenantId, apiKeyId, limits } = apiKeyAuthOf(res);
  const origin = { tenantId, apiKeyId, idempotencyKey: req.get('Idempotency-Key'), conversationId: req.get('X-Conversation-Id') };
  const requestId = deps.requests.requestId(origin);
  res.locals.requestId = requestId;
  res.setHeader('X-Request-Id', requestId);
  // A body parsed elsewhere is serialised once.
  const rawBody = takeRawBody(req) ?? new RawRequestBody(Buffer.from(JSON.stringify(req.body), 'utf8'));
  return { origin, requestId, rawBody, limits };
}

/**
 * Runs a prepared request to its end: edge, admission, relay. The caller has dropped its
 * parsed body (a second copy of every prompt) before this waits on anything.
 */
export async function serveBilledRequest(deps: BilledRouteDeps, req: Request, res: Response, input: BilledRequestInput, route: Pick<BilledRouteRequest, 'rawBody' | 'limits'>): Promise<void> {
  req.body = undefined;
  const pass = await deps.edge.enter(input, route.limits, (decision) => writeRateLimitHeaders(res, decision));

  // Listening before admission: a client gone while admission runs still cancels the upstream call.
  const clientGone = new AbortController();
  res.on('close', () => {
    if (res.writableFinished) return;
    clientGone.abort();
    deps.requests.cancel(input);
  });
  let realTokens: number | undefined;
  try {
    ({ totalTokens: realTokens } = await writeRelayedResponse(res, input, await deps.requests.admit(input, route.rawBody, clientGone.signal)));
  } catch (err) {
    // Refused or failed before any output: nothing was billed, so nothing counts against tokens per minute.
    if (!res.headersSent) realTokens = 0;
    throw err;
  } finally {
    pass.leave(realTokens);
  }
}
