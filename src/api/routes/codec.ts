/**
 * The codec server (Temporal's remote codec protocol) for the Web UI and the CLI:
 * `POST /codec/encode` and `POST /codec/decode` take and answer
 * `{ payloads: [{ metadata: { <key>: <base64> }, data: <base64> }] }` (Payloads as protobuf
 * JSON), through the same payload codec the clients and workers use (src/codec/).
 *
 * Decoding shows what history holds, so both need an operator: either
 * `Authorization: Bearer <ADMIN_TOKEN>` (the CLI, scripts) or the session cookie an operator
 * gets by signing in at `/codec/login` with the admin token (the Web UI, which can send
 * cookies but never the admin token; ../codec-session.ts). A session is accepted only from an
 * origin of CODEC_CORS_ORIGINS, so no other page a browser opens can use it, even one the
 * same-site cookie would reach. CORS lets those origins call with credentials; the preflight
 * (OPTIONS) needs no credential, as browsers send none with it.
 */
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { z } from 'zod';
import type { Logger } from '../../log';
import { adminTokenMatcher, AdminUnauthorizedError, bearerCredential } from '../auth';
import {
  clearedSessionCookieHeader,
  CODEC_SESSION_COOKIE,
  cookieValue,
  sessionCookieHeader,
  type CodecSessionRevocations,
  type CodecSessions,
} from '../codec-session';
import { loginPage, LOGIN_PAGE_HEADERS, type LoginPageState } from '../codec-login-page';
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
function codecCors(allowed: ReadonlySet<string>): RequestHandler {
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
  /** The config's codecCorsOrigins: the Web UI origins. */
  allowedOrigins: readonly string[];
  sessions: CodecSessions;
  revocations: CodecSessionRevocations;
  log: Pick<Logger, 'warn'>;
}

/** Whether the browser reached us over HTTPS (directly, or through a proxy that says so): the cookie is then Secure. */
function overHttps(req: Request): boolean {
  return req.secure || req.get('x-forwarded-proto')?.split(',')[0]?.trim() === 'https';
}

/**
 * Bearer admin token, else a live operator session from an allowed origin. A wrong Bearer
 * credential is refused even when a session cookie comes along: one credential, one answer.
 */
function codecAuth(deps: CodecRouterDeps, allowed: ReadonlySet<string>): RequestHandler {
  const isAdminToken = adminTokenMatcher(deps.adminToken);
  return async (req, _res, next) => {
    const bearer = bearerCredential(req.get('authorization'));
    if (bearer !== undefined) {
      if (!isAdminToken(bearer)) throw new AdminUnauthorizedError();
      next();
      return;
    }
    const cookie = cookieValue(req.get('cookie'), CODEC_SESSION_COOKIE);
    const origin = req.get('origin');
    const refusal = new AdminUnauthorizedError('This endpoint requires the admin token (Authorization: Bearer <ADMIN_TOKEN>) or an operator session: sign in at /codec/login.');
    if (cookie === undefined || origin === undefined || !allowed.has(origin)) throw refusal;
    const session = deps.sessions.verify(cookie);
    if (!session) throw refusal;
    let revoked: boolean;
    try {
      revoked = await deps.revocations.isRevoked(session);
    } catch (err) {
      deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'codec session revocation check failed; session refused');
      throw refusal;
    }
    if (revoked) throw refusal;
    next();
  };
}

/** GET /codec/login, POST /codec/login (form field `token`), POST /codec/logout. */
function loginRouter(deps: CodecRouterDeps): Router {
  const router = Router();
  const isAdminToken = adminTokenMatcher(deps.adminToken);
  const form = express.urlencoded({ extended: false, limit: '4kb' });
  const render = (req: Request, res: Response, status: number, state: Omit<LoginPageState, 'endpoint' | 'webUiOrigins'>): void => {
    const endpoint = `${overHttps(req) ? 'https' : 'http'}://${req.get('host') ?? 'localhost'}${req.baseUrl}`;
    res.status(status).set(LOGIN_PAGE_HEADERS).send(loginPage({ endpoint, webUiOrigins: deps.allowedOrigins, ...state }));
  };
  const currentSession = (req: Request) => deps.sessions.verify(cookieValue(req.get('cookie'), CODEC_SESSION_COOKIE));

  router.get('/login', async (req, res) => {
    const session = currentSession(req);
    const live = session && !(await deps.revocations.isRevoked(session).catch(() => true));
    render(req, res, 200, live ? { signedInUntil: session.expiresAt } : { signedOut: req.query['signed_out'] === '1' });
  });
  router.post('/login', form, (req, res) => {
    const token: unknown = (req.body as Record<string, unknown> | undefined)?.['token'];
    if (typeof token !== 'string' || !isAdminToken(token)) {
      render(req, res, 401, { refused: true });
      return;
    }
    const { value } = deps.sessions.issue();
    // Post/redirect/get: a reload of the answer does not post the token again.
    res.setHeader('Set-Cookie', sessionCookieHeader(value, deps.sessions.ttlSeconds, overHttps(req)));
    res.redirect(303, 'login');
  });
  router.post('/logout', async (req, res) => {
    const session = currentSession(req);
    res.setHeader('Set-Cookie', clearedSessionCookieHeader(overHttps(req)));
    try {
      if (session) await deps.revocations.revoke(session);
    } catch (err) {
      deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'codec session revocation failed');
      render(req, res, 503, { revokeFailedUntil: session?.expiresAt });
      return;
    }
    res.redirect(303, 'login?signed_out=1');
  });
  return router;
}

export function codecRouter(deps: CodecRouterDeps): Router {
  const allowed = new Set(deps.allowedOrigins);
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
  router.use('/codec', loginRouter(deps));
  router.use('/codec', codecCors(allowed), codecAuth(deps, allowed), codec);
  return router;
}
