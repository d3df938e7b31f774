/**
 * The body store (table request_body): the client's request body and, in relay mode
 * 'result', the relayed output, kept out of Temporal history (issue 8). Encrypted with
 * the payload codec's keys (src/codec/body-cipher.ts). A request body is written once
 * (a duplicate with the same request id keeps the first); an output is replaced by a
 * later attempt's. Deleting is idempotent.
 */
import type { Knex } from 'knex';
import { openBody, sealBody } from '../codec/body-cipher';
import type { CodecKeyring } from '../codec/keyring';

export type RequestBodyKind = 'request' | 'output';

/** How long a row survives a crash that skipped its delete. */
export const REQUEST_BODY_TTL_SECONDS = 24 * 3600;

export interface PutRequestBody {
  requestId: string;
  tenantId: string;
  kind: RequestBodyKind;
  body: Buffer;
}

interface Row {
  request_id: string;
  kind: RequestBodyKind;
  key_id: string;
  ciphertext: Buffer;
}

const aad = (requestId: string, kind: RequestBodyKind): string => `${kind}\n${requestId}`;

export function createRequestBodyRepository(db: Knex, keyring: CodecKeyring, opts: { ttlSeconds?: number } = {}) {
  const ttl = opts.ttlSeconds ?? REQUEST_BODY_TTL_SECONDS;
  return {
    async put(row: PutRequestBody): Promise<void> {
      const sealed = sealBody(keyring, row.body, aad(row.requestId, row.kind));
      const insert = db('request_body').insert({
        request_id: row.requestId,
        kind: row.kind,
        tenant_id: row.tenantId,
        key_id: sealed.keyId,
        ciphertext: sealed.data,
        expires_at: db.raw(`now() + make_interval(secs => ?)`, [ttl]),
      }).onConflict(['request_id', 'kind']);
      if (row.kind === 'request') await insert.ignore();
      else await insert.merge(['key_id', 'ciphertext', 'expires_at']);
    },

    /** The plaintext body, or undefined when there is none (deleted or expired). */
    async get(requestId: string, kind: RequestBodyKind): Promise<Buffer | undefined> {
      const row = await db<Row>('request_body').select('key_id', 'ciphertext').where({ request_id: requestId, kind }).first();
      if (!row) return undefined;
      return openBody(keyring, { keyId: row.key_id, data: row.ciphertext }, aad(requestId, kind));
    },

    async delete(requestId: string, kind: RequestBodyKind): Promise<void> {
      await db('request_body').where({ request_id: requestId, kind }).del();
    },

    /** Removes rows past their expiry (left by crashes); returns how many. */
    async deleteExpired(): Promise<number> {
      return db('request_body').where('expires_at', '<', db.fn.now()).del();
    },
  };
}

export type RequestBodyRepository = ReturnType<typeof createRequestBodyRepository>;
