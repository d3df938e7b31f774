/** The Express front: gateway routes, admin routes, health and metrics, one error middleware. */
import { randomUUID } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { Connection } from '@temporalio/client';
import type { PayloadCodec } from '@temporalio/common';
import type { Knex } from 'knex';
import type { Redis } from '../redis/client';
import type { Registry } from 'prom-client';
import type { Config } from '../config';
import type { Repositories } from '../db/repositories';
import type { Logger } from '../log';
import type { BillingMetrics } from '../metrics';
import { createEdgeGate } from '../edge/edge-gate';
import { InflightBound } from '../edge/inflight-bound';
import type { EdgeScripts } from '../redis/edge-scripts';
import type { QuotaWarmup } from '../redis/quota-warmup';
import type { RequestRelay } from '../redis/request-relay';
import type { QuotaScripts } from '../redis/scripts';
import { createBilledRequests } from '../services/billed-requests';
import { createPriceList } from '../services/price-list';
import { createAccountServices } from '../services';
import type { BilledRequestClient } from '../workflows/client';
import type { MaintenanceClient } from '../schedules/maintenance-client';
import { createApiKeyAuthenticator } from './auth';
import { errorMiddleware, unknownRouteHandler } from './errors';
import { chatBodyParser } from './chat-body';
import { healthRouter } from './health';
import { adminRouter } from './routes/admin';
import { dashboardBillingRouter } from './routes/dashboard-billing';
import type { DistributedLock } from '../locks/distributed-lock';
import { CHAT_COMPLETIONS_PATH, chatCompletionsRouter } from './routes/chat-completions';
import { codecRouter } from './routes/codec';
import { EMBEDDINGS_PATH, embeddingsRouter } from './routes/embeddings';
import { RESPONSES_PATH, responsesRouter } from './routes/responses';
import { createCodecSessionRevocations, createCodecSessions } from './codec-session';
import { modelsRouter } from './routes/models';

export interface ApiDeps {
  config: Readonly<Config>;
  db: Knex;
  redis: Redis;
  /** For /readyz. */
  temporal: Pick<Connection, 'healthService'>;
  workflows: BilledRequestClient;
  relay: RequestRelay;
  repositories: Repositories;
  scripts: Pick<QuotaScripts, 'raiseTenantLimit'>;
  edgeScripts: EdgeScripts;
  /** Warms a counter the edge finds cold (the same warm-up the workflow does). */
  warmup: QuotaWarmup;
  /** Served at /metrics; `metrics` are registered on it. */
  registry: Registry;
  metrics: Pick<BillingMetrics, 'httpDuration' | 'edgeRefusals' | 'shedRequests' | 'inflightRequests' | 'inflightLimit'>;
  log: Logger;
  /** The payload codec of the app's Temporal clients, served at /codec for the Web UI. */
  payloadCodec: PayloadCodec;
  /** Starts maintenance jobs (POST /admin/sync/:job, the sync after a top-up). */
  maintenance?: MaintenanceClient;
  /** Conversation locks for GET|DELETE /admin/locks/:conversation_id (built once per process in src/roles). */
  locks?: Pick<DistributedLock, 'inspect' | 'forceRelease'>;
}

export function createApiApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  // No client revalidates API answers: hashing every body for an ETag is wasted work on the hot path.
  app.set('etag', false);
  const { metrics } = deps;
  app.use((req: Request, res: Response, next: NextFunction) => {
    const stop = metrics.httpDuration.startTimer({ method: req.method });
    res.on('finish', () => {
      // The route pattern, never the raw path: ids would explode the label set.
      const route = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
      stop({ route: `${req.baseUrl}${route}`, status: String(res.statusCode) });
    });
    next();
  });
  // Every response, errors included, carries a request id; the chat route replaces it with the billed request's.
  app.use((_req: Request, res: Response, next: NextFunction) => {
    const requestId = `req_${randomUUID().replace(/-/g, '')}`;
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    next();
  });
  // Admin, codec and other JSON bodies: 1 MB. The billed routes (chat, embeddings, responses) parse their own body, up to
  // MAX_REQUEST_BODY_BYTES, only after the API key is authenticated (an anonymous client
  // cannot make the API buffer 32 MiB), keeping the raw bytes for the body store.
  const smallJson = express.json({ limit: '1mb' });
  const billedPaths = new Set([CHAT_COMPLETIONS_PATH, EMBEDDINGS_PATH, RESPONSES_PATH]);
  app.use((req: Request, res: Response, next: NextFunction) => (billedPaths.has(req.path) ? next() : smallJson(req, res, next)));

  const { repositories } = deps;
  const accounts = createAccountServices(deps);
  const authenticate = createApiKeyAuthenticator({ apiKeys: repositories.apiKeys, tenants: repositories.tenants, redis: deps.redis, logger: deps.log });
  const prices = createPriceList(repositories.modelPrices);
  const requests = createBilledRequests({
    prices,
    workflows: deps.workflows,
    bodies: repositories.requestBodies,
    conversations: repositories.conversations,
    relay: deps.relay,
    redis: deps.redis,
    log: deps.log,
    relayIdleTimeoutMs: deps.config.RELAY_IDLE_TIMEOUT_SECONDS * 1000,
    imageWorstCaseTokens: deps.config.IMAGE_WORST_CASE_TOKENS,
  });
  app.use(healthRouter({ redis: deps.redis, db: deps.db, temporal: deps.temporal, registry: deps.registry }));
  const edge = createEdgeGate({
    scripts: deps.edgeScripts,
    warmup: deps.warmup,
    inflight: new InflightBound(deps.config.MAX_INFLIGHT_REQUESTS, metrics),
    metrics,
    log: deps.log,
    leaseMs: deps.config.PARALLEL_LEASE_SECONDS * 1000,
    ledgerKnows: async (requestId) => (await repositories.billing.findByRequestId(requestId)) !== undefined,
  });
  const parseBody = chatBodyParser({ limit: deps.config.MAX_REQUEST_BODY_BYTES });
  app.use(chatCompletionsRouter({ authenticate, requests, edge, parseBody }));
  app.use(embeddingsRouter({ authenticate, requests, edge, parseBody }));
  app.use(responsesRouter({ authenticate, requests, edge, parseBody }));
  app.use(modelsRouter({ modelPrices: repositories.modelPrices, authenticate }));
  app.use(dashboardBillingRouter({ usage: accounts.usage, authenticate }));
  app.use(adminRouter({
    tenants: accounts.tenants,
    apiKeys: accounts.apiKeys,
    usage: accounts.usage,
    budgetWindows: accounts.budgetWindows,
    prices,
    repositories,
    logger: deps.log,
    adminToken: deps.config.ADMIN_TOKEN,
    describeWorkflow: (workflowId) => deps.workflows.status(workflowId),
    maintenance: deps.maintenance,
    locks: deps.locks,
    config: deps.config,
  }));
  app.use(codecRouter({
    codec: deps.payloadCodec,
    adminToken: deps.config.ADMIN_TOKEN,
    allowedOrigins: deps.config.codecCorsOrigins,
    sessions: createCodecSessions({ adminToken: deps.config.ADMIN_TOKEN, ttlSeconds: deps.config.CODEC_SESSION_TTL_SECONDS }),
    revocations: createCodecSessionRevocations(deps.redis),
    log: deps.log,
  }));
  app.use(unknownRouteHandler());
  app.use(errorMiddleware(deps.log));
  return app;
}
