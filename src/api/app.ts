/** The Express front: gateway routes, admin routes, health and metrics. */
import express, { type Express } from 'express';
import { healthRouter, type HealthDeps } from './health';

export type ApiDeps = HealthDeps;

export function createApiApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(healthRouter(deps));
  return app;
}
