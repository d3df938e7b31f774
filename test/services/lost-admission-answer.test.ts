/**
 * A run whose admission answer never reached the API (issue 14 fix 2, M12 "billed exactly once"):
 * Temporal started the run but the API could not attach to it, so the client is told 503. A
 * client without an Idempotency-Key cannot retry into that run (its retry is another request),
 * so the API asks the run to stop before its upstream call: it is voided, nothing billed. A client
 * with a key can: the run is left to bill, and the retry with the same key gets its output.
 * On the real dev server, Redis and PostgreSQL, with the app's worker running the workflow.
 */
import { createHash } from 'node:crypto';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { ChatCompletionRequest } from '../../src/openai/chat-request';
import type { RelayEntry } from '../../src/redis/request-relay';
import type { BilledRequestOrigin, BilledRequests } from '../../src/services/billed-requests';
import { AdmissionUnavailableError } from '../../src/services/request-errors';
import { billedRequestWorkflowId } from '../../src/workflows/definitions';
import { billedRequest } from '../../src/workflows/billed-request';
import { billedRequestStartOptions } from '../../src/workflows/client';
import { TEST_MODEL } from '../helpers/app';
import { useBilledRequestsHarness } from '../helpers/billed-requests-harness';
import { settled } from '../helpers/ledger';
import { uniqueId } from '../helpers/services';

describe('a run whose admission answer was lost (issue 14)', () => {
  const harness = useBilledRequestsHarness('lost-answer');

  /**
   * BilledRequests whose first admit starts the run for real but reports the answer lost: its
   * update-with-start still on its way (`update`, as a timed-out call), or only the start landed
   * and the admission update never did (`start`, as when the frontend died in between).
   */
  function withLostFirstAnswer(lost: 'update' | 'start', redisStatus?: string): BilledRequests {
    let first = true;
    return harness().billedRequests((real) => ({
      ...real,
      admit: (input) => {
        if (!first) return real.admit(input);
        first = false;
        const started = lost === 'update'
          ? real.admit(input)
          : harness().env.client.workflow.start(billedRequest, { ...billedRequestStartOptions(input, harness().taskQueue), args: [input] });
        void started.catch(() => undefined);
        return Promise.reject(new Error('deadline exceeded waiting for the admission update'));
      },
    }), redisStatus);
  }

  async function send(requests: BilledRequests, origin: BilledRequestOrigin, content = 'lost answer [mock:tokens=10] [mock:latency=50]'): Promise<{ requestId: string; entries?: RelayEntry[]; error?: unknown }> {
    const body: ChatCompletionRequest = { model: TEST_MODEL, stream: true, messages: [{ role: 'user', content }] };
    const raw = Buffer.from(JSON.stringify(body), 'utf8');
    const requestId = requests.requestId(origin);
    const input = await requests.prepare(origin, requestId, body, createHash('sha256').update(raw).digest('hex'));
    try {
      const output = await requests.admit(input, { take: () => raw }, new AbortController().signal);
      const entries: RelayEntry[] = [];
      for await (const entry of output) entries.push(entry);
      return { requestId, entries };
    } catch (error) {
      return { requestId, error };
    }
  }

  /** The run's result, once its start (still in flight when the API gave up) has landed. */
  async function runResult(requestId: string): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await harness().env.client.workflow.getHandle(billedRequestWorkflowId(requestId)).result();
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError) || attempt === 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  const rows = (tenantId: string): Promise<Array<{ request_id: string; status: string; amount_micros: string | null; completion_tokens: number | null }>> =>
    harness().db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' }).select('request_id', 'status', 'amount_micros', 'completion_tokens');

  /** A keyed request whose first attempt is told 503 (`first`), its run left to close, then retried with `retry`. */
  async function answeredAfterClose(first: BilledRequests, retry: BilledRequests, content?: string) {
    const t = await harness().app.tenant();
    const origin = { tenantId: t.tenantId, apiKeyId: t.apiKeyId, idempotencyKey: uniqueId('lost') };
    const lost = await send(first, origin, content);
    expect(lost.error).toBeInstanceOf(AdmissionUnavailableError);
    await runResult(lost.requestId);
    return { t, requestId: lost.requestId, retry: await send(retry, origin, content) };
  }
  const contentChunks = (entries: RelayEntry[] | undefined): number => (entries ?? []).filter((e) => e.type === 'chunk' && JSON.stringify(e.data).includes('"content"')).length;

  it('without an Idempotency-Key: 503, and the run it started is stopped before its upstream call and voided', async () => {
    const requests = withLostFirstAnswer('update');
    const { app, db } = harness();
    const t = await app.tenant();
    const { requestId, error } = await send(requests, { tenantId: t.tenantId, apiKeyId: t.apiKeyId });
    expect(error).toBeInstanceOf(AdmissionUnavailableError);
    // The run does exist (its start was on its way when the API gave up): it ends on its own, having called no upstream.
    await runResult(requestId);
    await settled(db, t.tenantId);
    expect((await rows(t.tenantId)).map((r) => [r.request_id, r.status, Number(r.amount_micros ?? 0)])).toEqual([[requestId, 'voided', 0]]);
  }, 60_000);

  it('with an Idempotency-Key: 503, the run bills once, and the retry with the same key gets its whole output', async () => {
    const requests = withLostFirstAnswer('update');
    const { app, db } = harness();
    const t = await app.tenant();
    const origin = { tenantId: t.tenantId, apiKeyId: t.apiKeyId, idempotencyKey: uniqueId('lost-key') };
    const first = await send(requests, origin);
    expect(first.error).toBeInstanceOf(AdmissionUnavailableError);
    const retry = await send(requests, origin);
    expect(retry.requestId).toBe(first.requestId);
    const deltas = (retry.entries ?? []).filter((e) => e.type === 'chunk').length;
    expect([retry.error, deltas > 0, retry.entries?.at(-1)?.type]).toEqual([undefined, true, 'done']);
    await settled(db, t.tenantId);
    const billed = await rows(t.tenantId);
    expect(billed.map((r) => [r.request_id, r.status, r.completion_tokens])).toEqual([[first.requestId, 'committed', 10]]);
  }, 60_000);

  // Relay mode 'result' (Redis down at admission): the output is in the body store, not a relay
  // stream; the retry finds the run closed and never having answered its admission update.
  it('relay mode result: the retry of a run that finished meanwhile gets the output no one read, billed once', async () => {
    const requests = withLostFirstAnswer('start', 'reconnecting');
    const { t, requestId, retry } = await answeredAfterClose(requests, requests);
    expect([retry.error, contentChunks(retry.entries), retry.entries?.at(-1)?.type]).toEqual([undefined, 10, 'done']);
    await settled(harness().db, t.tenantId);
    expect((await rows(t.tenantId)).map((r) => [r.request_id, r.status, r.completion_tokens])).toEqual([[requestId, 'committed', 10]]);
    // Delivered once: the stored output is gone.
    expect(await harness().db('request_body').where({ request_id: requestId, kind: 'output' })).toHaveLength(0);
  }, 60_000);

  it('relay mode result: the retry of a run that was voided gets the upstream\'s refusal, nothing billed', async () => {
    const requests = withLostFirstAnswer('start', 'reconnecting');
    const { t, requestId, retry } = await answeredAfterClose(requests, requests, 'refused upstream [mock:status=400]');
    // What a client reading it live would have got: the upstream's error, no output.
    expect([retry.error, retry.entries?.map((e) => e.type)]).toEqual([undefined, ['error']]);
    await settled(harness().db, t.tenantId);
    expect((await rows(t.tenantId)).map((r) => [r.request_id, r.status, Number(r.amount_micros ?? 0)])).toEqual([[requestId, 'voided', 0]]);
  }, 60_000);

  it('a retry made once Redis is back, of a run admitted while it was down, gets the output that run stored (not 409 expired)', async () => {
    // The run answers its admission update (the retry attaches to that decision) and relays nothing: relay
    // mode result. The retry's API sees Redis ready, so it looks for a relay stream that was never written.
    const { t, requestId, retry } = await answeredAfterClose(withLostFirstAnswer('update', 'reconnecting'), harness().billedRequests((real) => real));
    expect([retry.error, contentChunks(retry.entries), retry.entries?.at(-1)?.type]).toEqual([undefined, 10, 'done']);
    await settled(harness().db, t.tenantId);
    expect((await rows(t.tenantId)).map((r) => [r.request_id, r.status, r.completion_tokens])).toEqual([[requestId, 'committed', 10]]);
  }, 60_000);
});
