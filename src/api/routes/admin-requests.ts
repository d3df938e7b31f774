/**
 * GET /admin/requests/:request_id: one billed request as ops see it, the ledger
 * entry joined with its workflow's status (findable in the Temporal Web UI by the
 * same id). POST /admin/alerts: AlertManager's webhook, logged for the audit trail.
 */
import { Router } from 'express';
import { z } from 'zod';
import { NotFoundError } from '../errors';
import type { BillingRepository } from '../../db/billing-repository';
import type { Logger } from '../../log';
import { toTransactionView, type TransactionView } from './admin-tenants';

export interface RequestView extends TransactionView {
  tenant_id: string;
  /** The endpoint billed: chat, embeddings or responses (issue 11). */
  operation: string | null;
  admission_path: string | null;
  workflow_id: string | null;
  /** RUNNING, COMPLETED, FAILED…; null when Temporal cannot be asked or has no such workflow. */
  workflow_status: string | null;
  voided_at: string | null;
  failure_reason: string | null;
}

/** Asks Temporal for a workflow's status; injected so the admin router needs no client of its own. */
export type DescribeWorkflow = (workflowId: string) => Promise<string | null>;

const requestIdSchema = z.string().min(1).max(200);

const alertSchema = z.object({
  status: z.string(),
  alerts: z.array(z.object({ status: z.string(), labels: z.record(z.string()).default({}) }).passthrough()).default([]),
}).passthrough();

export interface AdminRequestDeps {
  ledger: Pick<BillingRepository, 'findByRequestId'>;
  logger: Pick<Logger, 'warn'>;
  /** Without it the workflow status is null. */
  describeWorkflow?: DescribeWorkflow;
}

export function adminRequestRoutes(ctx: AdminRequestDeps): Router {
  const router = Router();

  router.get('/requests/:requestId', async (req, res) => {
    const requestId = requestIdSchema.parse(req.params.requestId);
    const entry = await ctx.ledger.findByRequestId(requestId);
    if (!entry) throw new NotFoundError(`request ${requestId}`);
    let workflowStatus: string | null = null;
    if (entry.workflowId && ctx.describeWorkflow) {
      workflowStatus = await ctx.describeWorkflow(entry.workflowId).catch(() => null);
    }
    const view: RequestView = {
      ...toTransactionView(entry),
      tenant_id: entry.tenantId,
      operation: entry.operation ?? null,
      admission_path: entry.admissionPath,
      workflow_id: entry.workflowId,
      workflow_status: workflowStatus,
      voided_at: entry.voidedAt === null ? null : entry.voidedAt.toISOString(),
      failure_reason: entry.failureReason,
    };
    res.json(view);
  });

  router.post('/alerts', (req, res) => {
    const payload = alertSchema.parse(req.body);
    for (const alert of payload.alerts) {
      ctx.logger.warn({ alert: alert.labels.alertname, severity: alert.labels.severity, status: alert.status }, 'alert received');
    }
    res.status(204).end();
  });

  return router;
}
