/**
 * The chat route's request body: read once into a buffer framed for the body store, parsed
 * from it, and its raw bytes handed on once to the body store.
 *
 * A chat body may be MAX_REQUEST_BODY_BYTES (32 MiB), and a request may live for minutes (a
 * long stream), so this replaces express.json for the route to keep copies of it few and short:
 *
 * - with a Content-Length (the usual case) the bytes go straight from the socket into one
 *   buffer of the final size, with room before and after for the sealing iv and tag
 *   (src/codec/body-cipher.ts), so the body store encrypts them in place, copying nothing
 *   (express.json holds every chunk until it joins them, then the joined copy);
 * - a compressed or chunked body is collected and copied once into such a buffer;
 * - the JSON text decoded for JSON.parse and the parsed object are the two other copies;
 *   the route drops the object after the estimate, and the bytes are taken once
 *   (RawRequestBody.take) by the body store: nothing keeps them for the request's life
 *   (not the request, not a local variable of the route: V8 keeps an async function's
 *   locals alive across its awaits).
 *
 * It behaves as express.json does where clients can tell: only `application/json` bodies
 * are parsed (others leave `req.body` undefined), a charset other than UTF-8 is 415, gzip,
 * deflate and br are inflated (other encodings 415), an empty body is `{}`, a body over the
 * limit is 413 (at once when the declared length says so), malformed JSON is 400.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { pipeline, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { RequestHandler } from 'express';
import { FramedPlaintext } from '../codec/body-cipher';
import { AppError, ErrorCode, ErrorType, InvalidRequestError, RequestTooLargeError } from './errors';

/** Thrown when a raw body is taken twice: a bug, the bytes went to the first taker. */
export class RawBodyTakenError extends Error {
  override name = 'RawBodyTakenError';
  constructor() {
    super('the raw request body was already handed on');
  }
}

/** A request's raw bytes (framed for sealing in place) and their SHA-256, until someone takes them. */
export class RawRequestBody {
  #framed: FramedPlaintext | undefined;
  /** Hex SHA-256 of the bytes (the Idempotency-Key check compares it). */
  readonly sha256: string;
  readonly byteLength: number;

  constructor(bytes: FramedPlaintext | Buffer) {
    const framed = bytes instanceof FramedPlaintext ? bytes : FramedPlaintext.copyOf(bytes);
    this.#framed = framed;
    this.sha256 = createHash('sha256').update(framed.plaintext).digest('hex');
    this.byteLength = framed.plaintext.length;
  }

  /** The bytes, once; this object forgets them. */
  take(): FramedPlaintext {
    const framed = this.#framed;
    if (framed === undefined) throw new RawBodyTakenError();
    this.#framed = undefined;
    return framed;
  }
}

const rawBodies = new WeakMap<IncomingMessage, RawRequestBody>();

/** The raw body of a request parsed by {@link chatBodyParser}, removed from the request; else undefined. */
export function takeRawBody(req: IncomingMessage): RawRequestBody | undefined {
  const raw = rawBodies.get(req);
  rawBodies.delete(req);
  return raw;
}

function unsupported(message: string): AppError {
  return new AppError({ status: 415, type: ErrorType.invalidRequest, code: ErrorCode.invalidRequest, message });
}

function tooLarge(limit: number): RequestTooLargeError {
  return new RequestTooLargeError(`Request body too large (the limit is ${limit} bytes).`);
}

function inflater(encoding: string): Transform | undefined {
  if (encoding === 'gzip') return zlib.createGunzip();
  if (encoding === 'deflate') return zlib.createInflate();
  if (encoding === 'br') return zlib.createBrotliDecompress();
  return undefined;
}

async function readFramed(source: AsyncIterable<Buffer>, declared: number | undefined, limit: number): Promise<FramedPlaintext> {
  if (declared !== undefined) {
    const framed = FramedPlaintext.allocate(declared);
    let at = 0;
    for await (const chunk of source) {
      if (at + chunk.length > declared) throw new InvalidRequestError('Request body longer than its Content-Length.');
      chunk.copy(framed.buffer, FramedPlaintext.start + at);
      at += chunk.length;
    }
    if (at !== declared) throw new InvalidRequestError('Request body shorter than its Content-Length.');
    return framed;
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  const framed = FramedPlaintext.allocate(total);
  let at = FramedPlaintext.start;
  for (const chunk of chunks.splice(0)) at += chunk.copy(framed.buffer, at);
  return framed;
}

function parseJson(bytes: Buffer): unknown {
  let text = bytes.toString('utf8');
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a UTF-8 byte order mark, stripped as express.json does
  if (text.length === 0) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidRequestError('Malformed JSON in request body.', undefined, err);
  }
}

/** The chat route's body parser: up to `limit` bytes, raw bytes kept for the body store (see the module comment). */
export function chatBodyParser(opts: { limit: number }): RequestHandler {
  const { limit } = opts;
  return async (req, res, next) => {
    if (!req.is('application/json')) {
      next();
      return;
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(req.get('content-type') ?? '')?.[1]?.toLowerCase();
    if (charset !== undefined && !charset.startsWith('utf-')) throw unsupported(`unsupported charset "${charset.toUpperCase()}"`);
    const encoding = (req.get('content-encoding') ?? 'identity').trim().toLowerCase();
    const declaredHeader = req.get('content-length');
    const declared = encoding === 'identity' && declaredHeader !== undefined ? Number(declaredHeader) : undefined;
    if (declared !== undefined && (!Number.isSafeInteger(declared) || declared < 0)) throw new InvalidRequestError('Invalid Content-Length.');
    if (declared !== undefined && declared > limit) {
      // The body is not read: the connection cannot carry another request.
      res.setHeader('Connection', 'close');
      throw tooLarge(limit);
    }
    let source: AsyncIterable<Buffer> = req;
    if (encoding !== 'identity') {
      const inflate = inflater(encoding);
      if (!inflate) throw unsupported(`unsupported content encoding "${encoding}"`);
      // pipeline destroys the inflater with the request's error (a client gone mid-body), which the read then throws.
      source = pipeline(req, inflate, () => undefined);
    }
    let framed: FramedPlaintext;
    try {
      framed = await readFramed(source, declared, limit);
    } catch (err) {
      res.setHeader('Connection', 'close');
      if (err instanceof AppError) throw err;
      // The client went away mid-body, or the compressed data was corrupt.
      throw new InvalidRequestError('The request body could not be read.', undefined, err);
    }
    req.body = parseJson(framed.plaintext);
    rawBodies.set(req, new RawRequestBody(framed));
    next();
  };
}
