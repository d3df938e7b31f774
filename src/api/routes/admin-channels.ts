/**
 * Upstream channel routes (issue 10): `PUT /admin/channels/:id` creates or replaces a
 * channel `{base_url, api_key?, models, weight, enabled}`; `GET /admin/channels` and
 * `GET /admin/channels/:id` show channels with a `has_api_key` flag, never the key.
 *
 * `api_key` omitted keeps the stored key (an operator re-weighting a channel need not hold
 * its secret); `null` removes it. The key is encrypted at rest (src/channels/channel-repository.ts)
 * and never logged: this route logs only the channel id.
 */
import { Router } from 'express';
import { z } from 'zod';
import type { ChannelRepository, ChannelView } from '../../channels/channel-repository';
import type { Logger } from '../../log';
import { NotFoundError } from '../errors';
import { modelNameSchema } from '../schemas';

/** Channel ids travel in workflow history, metrics labels and Redis keys: short and plain. */
export const channelIdSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 of A-Z a-z 0-9 . _ -');

function isHttpUrl(value: string): boolean {
  try {
    return /^https?:$/.test(new URL(value).protocol);
  } catch {
    return false;
  }
}

const baseUrlSchema = z.string().max(2048).refine(isHttpUrl, { message: 'must be an http or https URL' });

export const MAX_CHANNEL_WEIGHT = 1_000_000;

const channelBodySchema = z.object({
  base_url: baseUrlSchema,
  // Never echoed in an error: zod's messages name the field, not the value.
  api_key: z.string().min(1).max(4096).nullable().optional(),
  models: z.array(z.union([z.literal('*'), modelNameSchema])).min(1).max(1000),
  weight: z.number().int().min(1).max(MAX_CHANNEL_WEIGHT),
  enabled: z.boolean(),
}).strict();

const paramsSchema = z.object({ id: channelIdSchema });

export function toChannelView(channel: ChannelView) {
  return {
    id: channel.id,
    base_url: channel.baseUrl,
    models: channel.models,
    weight: channel.weight,
    enabled: channel.enabled,
    has_api_key: channel.hasApiKey,
    created_at: channel.createdAt.toISOString(),
    updated_at: channel.updatedAt.toISOString(),
  };
}

export function adminChannelRoutes(deps: { channels: Pick<ChannelRepository, 'put' | 'get' | 'list'>; logger: Pick<Logger, 'info'> }): Router {
  const router = Router();

  router.put('/channels/:id', async (req, res) => {
    const { id } = paramsSchema.parse(req.params);
    const body = channelBodySchema.parse(req.body);
    const { channel, created } = await deps.channels.put({
      id,
      baseUrl: body.base_url.replace(/\/+$/, ''),
      ...(body.api_key !== undefined ? { apiKey: body.api_key } : {}),
      models: [...new Set(body.models)],
      weight: body.weight,
      enabled: body.enabled,
    });
    deps.logger.info({ channelId: id, created, enabled: channel.enabled }, 'upstream channel written');
    res.status(created ? 201 : 200).json(toChannelView(channel));
  });

  router.get('/channels', async (_req, res) => {
    res.json({ object: 'list', data: (await deps.channels.list()).map(toChannelView) });
  });

  router.get('/channels/:id', async (req, res) => {
    const { id } = paramsSchema.parse(req.params);
    const channel = await deps.channels.get(id);
    if (!channel) throw new NotFoundError(`channel ${id}`);
    res.json(toChannelView(channel));
  });

  return router;
}
