/**
 * The codec server (Temporal's remote codec protocol) for the Web UI and the CLI:
 * `POST /codec/encode` and `POST /codec/decode` take and answer
 * `{ payloads: [{ metadata: { <key>: <base64> }, data: <base64> }] }` (Payloads as protobuf
 * JSON), through the same payload codec the clients and workers use (src/codec/).
 *
 * Both need `Authorization: Bearer <ADMIN_TOKEN>`: decoding shows prompts. CORS lets the
 * configured Web UI origins call them from the browser (CODEC_CORS_ORIGINS); the preflight
 * (OPTIONS) needs no credential, as browsers send none with it.
 */
import { Router, type RequestHandler } from 'express';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { z } from 'zod';
import { adminAuth } from '../auth';
import { InvalidRequestError } from '../errors';
import { PayloadCodecError } from '../../codec/payload-codec';

/** Standard or URL-safe base64, as protobuf JSON accepts for bytes. */
const base64 = z.string().regex(/^[A-Za-z0-9+/_-]*={0,2}$/, 'must be base64');

const payloadsBodySchema = z.object({
  payloads: z.array(z.object({
    metadata: z.record(base64).optional(),
    data: base64.optional(),
  })),
});

interface PayloadJson {
  metadata: Record<string, string>;
  data: string;
}

function fromJson(body: unknown): Payload[] {
  return payloadsBodySchema.parse(body).payloads.map((p) => ({
    metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([key, value]) => [key, Buffer.from(value, 'base64')])),
    data: Buffer.from(p.data ?? '', 'base64'),
  }));
}

function toJson(payloads: Payload[]): { payloads: PayloadJson[] } {
  return {
    payloads: payloads.map((p) => ({
      metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([key, value]) => [key, Buffer.from(value).toString('base64')])),
      data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
    })),
  };
}

export const CODEC_ALLOWED_HEADERS = 'X-Namespace, Content-Type, Authorization';

/** CORS for the allowed origins; a preflight is answered here, before any credential check. */
function codecCors(allowedOrigins: readonly string[]): RequestHandler {
  const allowed = new Set(allowedOrigins);
  return (req, res, next) => {
    const origin = req.get('origin');
    res.vary('Origin');
    if (origin !== undefined && allowed.has(origin)) {
      res.setHeader('Access-Control-Allow-Origin', origin);
      res.setHeader('Access-Control-Allow-Credentials', 'true');
    }
    if (req.method === 'OPTIONS') {
      if (origin !== undefined && allowed.has(origin)) {
        res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
        res.setHeader('Access-Control-Allow-Headers', CODEC_ALLOWED_HEADERS);
        res.setHeader('Access-Control-Max-Age', '600');
      }
      res.status(204).end();
      return;
    }
    next();
  };
}

export interface CodecRouterDeps {
  codec: PayloadCodec;
  /** The config's ADMIN_TOKEN. */
  adminToken: string;
  /** The config's codecCorsOrigins. */
  allowedOrigins: readonly string[];
}

export function codecRouter(deps: CodecRouterDeps): Router {
  const codec = Router();
  const run = (op: 'encode' | 'decode'): RequestHandler => async (req, res) => {
    const payloads = fromJson(req.body);
    try {
      res.json(toJson(await deps.codec[op](payloads)));
    } catch (err) {
      if (err instanceof PayloadCodecError) throw new InvalidRequestError(err.message, undefined, err);
      throw err;
    }
  };
  codec.post('/encode', run('encode'));
  codec.post('/decode', run('decode'));

  const router = Router();
  router.use('/codec', codecCors(deps.allowedOrigins), adminAuth(deps.adminToken), codec);
  return router;
}
