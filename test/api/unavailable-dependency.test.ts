/**
 * A dependency that is unreachable is a 503 with Retry-After, never a 500 (issue 14: the
 * fault-injection soak saw requests answered 500 "internal error" while a killed PostgreSQL
 * restarted). The errors are the real ones pg, knex and ioredis throw.
 */
import { ServiceError } from '@temporalio/client';
import { Client } from 'pg';
import { DatabaseError } from 'pg-protocol';
import { toAppError } from '../../src/api/errors';
import { createDb } from '../../src/db/knex';
import { createLogger } from '../../src/log';
import { createRedis } from '../../src/redis/client';
import { freePort } from '../../src/embedded/child';
import { testDb } from '../helpers/services';

async function thrownBy(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

const asAnswer = (err: unknown): { status: number; code: string; retryAfter?: number } => {
  const e = toAppError(err);
  return { status: e.status, code: e.code, retryAfter: e.retryAfterSeconds };
};
const UNAVAILABLE = { status: 503, code: 'service_unavailable', retryAfter: 1 };

describe('an unreachable dependency answers 503', () => {
  it('PostgreSQL refusing connections (pg and knex)', async () => {
    const port = await freePort();
    const client = new Client({ connectionString: `postgres://x@127.0.0.1:${port}/db` });
    expect(asAnswer(await thrownBy(() => client.connect()))).toEqual(UNAVAILABLE);
    const db = createDb(`postgres://x@127.0.0.1:${port}/db`, { max: 1 }, createLogger('silent', 'unavailable-dependency-test'));
    try {
      expect(asAnswer(await thrownBy(() => db.raw('SELECT 1')))).toEqual(UNAVAILABLE);
    } finally {
      await db.destroy();
    }
  });

  it('PostgreSQL starting up or shutting down (SQLSTATE 57P03, 57P01), a terminated connection', async () => {
    const starting = Object.assign(new DatabaseError('the database system is starting up', 104, 'error'), { code: '57P03' });
    const shutdown = Object.assign(new DatabaseError('terminating connection due to administrator command', 80, 'error'), { code: '57P01' });
    expect(asAnswer(starting)).toEqual(UNAVAILABLE);
    expect(asAnswer(shutdown)).toEqual(UNAVAILABLE);
    // A backend killed under a live pool: the next query on its connection.
    const db = testDb();
    try {
      const pid = (await db.raw<{ rows: Array<{ pid: number }> }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const killed = await thrownBy(() => db.transaction(async (trx) => {
        await trx.raw('SELECT pg_terminate_backend(pg_backend_pid())');
      }));
      expect(pid).toBeGreaterThan(0);
      expect(asAnswer(killed)).toEqual(UNAVAILABLE);
    } finally {
      await db.destroy();
    }
  });

  it('Redis closed', async () => {
    const redis = createRedis(`redis://127.0.0.1:${await freePort()}`);
    redis.on('error', () => undefined);
    try {
      expect(asAnswer(await thrownBy(() => redis.get('x')))).toEqual(UNAVAILABLE);
    } finally {
      redis.disconnect();
    }
  });

  it('Temporal unreachable, or refusing updates while it retries the task of a killed worker', () => {
    // What @grpc/grpc-js rejects with, inside the SDK's ServiceError.
    const grpc = (code: number, details: string): Error => Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });
    expect(asAnswer(new ServiceError('Workflow Update failed', { cause: grpc(9, 'Unable to perform workflow execution update due to Workflow Task in failed state.') }))).toEqual(UNAVAILABLE);
    expect(asAnswer(new ServiceError('Failed to start', { cause: grpc(14, 'No connection established') }))).toEqual(UNAVAILABLE);
    expect(asAnswer(new ServiceError('Failed', { cause: grpc(3, 'invalid argument') }))).toEqual({ status: 500, code: 'internal_error', retryAfter: undefined });
  });

  it('but a database error of the request or the code stays a 500', () => {
    const unique = Object.assign(new DatabaseError('duplicate key value violates unique constraint', 90, 'error'), { code: '23505' });
    expect(asAnswer(unique)).toEqual({ status: 500, code: 'internal_error', retryAfter: undefined });
    expect(asAnswer(new Error('boom'))).toEqual({ status: 500, code: 'internal_error', retryAfter: undefined });
  });
});
