/**
 * `GET|DELETE /admin/locks/:conversation_id` (M7.3): who holds a conversation's lock and
 * until when, and the operator's release of a stuck one (the holder's watchdog then reports
 * the lock lost, and its later writes are refused by their fencing token).
 */
import { Router } from 'express';
import { z } from 'zod';
import type { DistributedLock, LockHolder } from '../../locks/distributed-lock';
import type { Logger } from '../../log';
import { NotFoundError } from '../errors';
import { conversationIdSchema } from '../schemas';

const paramsSchema = z.object({ conversation_id: conversationIdSchema });

export function toLockView(holder: LockHolder) {
  return {
    conversation_id: holder.conversationId,
    fence: holder.fence,
    info: holder.info,
    acquired_at: holder.acquiredAt.toISOString(),
    expires_in_ms: holder.expiresInMs,
  };
}

export function adminLockRoutes(deps: { locks: Pick<DistributedLock, 'inspect' | 'forceRelease'>; logger: Pick<Logger, 'warn'> }): Router {
  const router = Router();

  router.get('/locks/:conversation_id', async (req, res) => {
    const { conversation_id: conversationId } = paramsSchema.parse(req.params);
    const holder = await deps.locks.inspect(conversationId);
    if (!holder) throw new NotFoundError(`lock of conversation ${conversationId}`);
    res.json(toLockView(holder));
  });

  router.delete('/locks/:conversation_id', async (req, res) => {
    const { conversation_id: conversationId } = paramsSchema.parse(req.params);
    const holder = await deps.locks.inspect(conversationId);
    if (!holder || !(await deps.locks.forceRelease(conversationId))) throw new NotFoundError(`lock of conversation ${conversationId}`);
    deps.logger.warn({ conversationId, fence: holder.fence }, 'conversation lock released by an operator');
    res.json({ conversation_id: conversationId, released: true, fence: holder.fence });
  });

  return router;
}
