import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import {
  AppError,
  BudgetExceededError,
  ConflictError,
  InsufficientQuotaError,
  InvalidApiKeyError,
  InvalidRequestError,
  ModelNotFoundError,
  NotFoundError,
  RequestTooLargeError,
  ServiceUnavailableError,
  UpstreamError,
  errorMiddleware,
  formatParamPath,
} from '../../src/api/errors';
import type { Logger } from '../../src/log';
import { chatCompletionRequestSchema } from '../../src/openai/chat-request';

const DB_TEXT = 'duplicate key value violates unique constraint "tenant_quota_pkey" Key (id)=(acme)';
const PROMPT = 'my very secret prompt';

const logger = { error: jest.fn(), warn: jest.fn() };
let server: Server;
let baseUrl: string;

function buildApp(): express.Express {
  const app = express();
  app.use((req, res, next) => {
    if (req.get('x-test-no-request-id') === undefined) res.locals['requestId'] = 'req-123';
    next();
  });
  app.use(express.json({ limit: '1kb' }));
  app.post('/v1/chat/completions', (req, res) => {
    const body = chatCompletionRequestSchema.parse(req.body);
    res.json({ model: body.model });
  });
  app.get('/model-not-found', () => {
    throw new ModelNotFoundError('gpt-9');
  });
  app.get('/db-failure', async () => {
    await Promise.resolve();
    throw new Error(DB_TEXT);
  });
  app.get('/thrown-string', () => {
    // eslint-disable-next-line @typescript-eslint/only-throw-error
    throw 'not an Error';
  });
  app.get('/unavailable', () => {
    throw new ServiceUnavailableError('Temporal is unavailable.', 5, new Error(DB_TEXT));
  });
  app.get('/stream-then-fail', (_req, res) => {
    res.status(200).write('data: {}\n\n');
    throw new Error('upstream died mid-stream');
  });
  app.use(errorMiddleware(logger as unknown as Pick<Logger, 'error' | 'warn'>));
  return app;
}

beforeAll(async () => {
  server = buildApp().listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});

beforeEach(() => {
  logger.error.mockClear();
  logger.warn.mockClear();
});

function postJson(body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${baseUrl}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
}

describe('errorMiddleware over real HTTP (bad input gets a clear 4xx in the OpenAI shape)', () => {
  it('renders malformed JSON as 400 invalid_request_error with the request id', async () => {
    const res = await postJson('{"model": "gpt-4o", "messages": [');
    expect(res.status).toBe(400);
    expect(res.headers.get('x-request-id')).toBe('req-123');
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual({
      error: { message: 'Malformed JSON in request body.', type: 'invalid_request_error', code: 'invalid_request_error' },
    });
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('renders an oversize body as 413 request_too_large', async () => {
    const res = await postJson(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(2_000) }] }));
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({
      error: { message: 'Request body too large.', type: 'invalid_request_error', code: 'request_too_large' },
    });
  });

  it('renders other body-parser client errors with their own status (unsupported charset -> 415)', async () => {
    const res = await postJson('{}', { 'content-type': 'application/json; charset=latin1' });
    expect(res.status).toBe(415);
    expect(await res.json()).toEqual({
      error: { message: 'unsupported charset "LATIN1"', type: 'invalid_request_error', code: 'invalid_request_error' },
    });
  });

  it('renders a zod failure as 400 naming the first bad field in OpenAI notation', async () => {
    const res = await postJson(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'robot', content: PROMPT }] }));
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: Record<string, unknown> };
    expect(body.error).toEqual({
      message: expect.stringMatching(/^Invalid messages\[0\]\.role: Invalid enum value/),
      type: 'invalid_request_error',
      code: 'invalid_request_error',
      param: 'messages[0].role',
    });
    expect(JSON.stringify(body)).not.toContain(PROMPT);
  });

  it('passes a valid request through untouched', async () => {
    const res = await postJson(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ model: 'gpt-4o' });
  });

  it('renders an AppError with its own status, type, code and param', async () => {
    const res = await fetch(`${baseUrl}/model-not-found`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: {
        message: "The model 'gpt-9' does not exist or you do not have access to it.",
        type: 'invalid_request_error',
        code: 'model_not_found',
        param: 'model',
      },
    });
  });

  it('renders an unknown async error as 500 "internal error" without leaking database text, and logs it', async () => {
    const res = await fetch(`${baseUrl}/db-failure`);
    expect(res.status).toBe(500);
    expect(res.headers.get('x-request-id')).toBe('req-123');
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { message: 'internal error', type: 'server_error', code: 'internal_error' } });
    expect(text).not.toContain('tenant_quota');
    expect(logger.error).toHaveBeenCalledTimes(1);
    const [fields, message] = logger.error.mock.calls[0] as [Record<string, unknown>, string];
    expect(message).toBe('unhandled error');
    expect(fields).toMatchObject({ requestId: 'req-123', method: 'GET', path: '/db-failure', status: 500, code: 'internal_error' });
    expect((fields['err'] as Error).message).toBe(DB_TEXT);
  });

  it('renders a thrown non-Error as 500 and omits X-Request-Id when there is none', async () => {
    const res = await fetch(`${baseUrl}/thrown-string`, { headers: { 'x-test-no-request-id': '1' } });
    expect(res.status).toBe(500);
    expect(res.headers.get('x-request-id')).toBeNull();
    expect(await res.json()).toEqual({ error: { message: 'internal error', type: 'server_error', code: 'internal_error' } });
  });

  it('renders 503 with Retry-After, logs a warning with the cause, and hides the cause from the client', async () => {
    const res = await fetch(`${baseUrl}/unavailable`);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({
      error: { message: 'Temporal is unavailable.', type: 'server_error', code: 'service_unavailable' },
    });
    expect(text).not.toContain('tenant_quota');
    expect(logger.warn).toHaveBeenCalledTimes(1);
    expect(logger.warn.mock.calls[0]![0]).toMatchObject({ requestId: 'req-123', status: 503, code: 'service_unavailable' });
    expect(logger.error).not.toHaveBeenCalled();
  });

  it('keeps the started status of a response that already sent headers and logs the error', async () => {
    const res = await fetch(`${baseUrl}/stream-then-fail`);
    expect(res.status).toBe(200);
    await res.text().catch(() => '');
    expect(logger.error).toHaveBeenCalledTimes(1);
    expect(logger.error.mock.calls[0]![0]).toMatchObject({ requestId: 'req-123', path: '/stream-then-fail' });
  });
});

describe('AppError subclasses (the HTTP contract)', () => {
  const contract: Array<{ error: AppError; status: number; type: string; code: string }> = [
    { error: new InvalidRequestError('bad', 'model'), status: 400, type: 'invalid_request_error', code: 'invalid_request_error' },
    { error: new InvalidApiKeyError(), status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
    { error: new ModelNotFoundError('m'), status: 404, type: 'invalid_request_error', code: 'model_not_found' },
    { error: new NotFoundError('tenant'), status: 404, type: 'invalid_request_error', code: 'not_found' },
    { error: new ConflictError('exists'), status: 409, type: 'invalid_request_error', code: 'conflict' },
    { error: new RequestTooLargeError(), status: 413, type: 'invalid_request_error', code: 'request_too_large' },
    { error: new InsufficientQuotaError(), status: 429, type: 'insufficient_quota', code: 'insufficient_quota' },
    { error: new BudgetExceededError(), status: 429, type: 'insufficient_quota', code: 'budget_exceeded' },
    { error: new UpstreamError(), status: 502, type: 'server_error', code: 'upstream_error' },
    { error: new ServiceUnavailableError(), status: 503, type: 'server_error', code: 'service_unavailable' },
  ];

  it.each(contract.map((row) => ({ ...row, name: row.error.name })))('$name maps to $status $type / $code', ({ error, status, type, code }) => {
    expect(error).toBeInstanceOf(AppError);
    expect(error).toBeInstanceOf(Error);
    expect([error.status, error.type, error.code]).toEqual([status, type, code]);
    expect(error.toBody().error).toMatchObject({ type, code, message: error.message });
  });

  it('names each subclass for logs', () => {
    expect(new BudgetExceededError().name).toBe('BudgetExceededError');
    expect(new NotFoundError('API key').message).toBe('API key not found');
  });

  it('formats zod paths the way OpenAI names params', () => {
    expect(formatParamPath(['messages', 0, 'content', 2, 'text'])).toBe('messages[0].content[2].text');
    expect(formatParamPath(['model'])).toBe('model');
    expect(formatParamPath([])).toBe('');
  });
});
