/**
 * A billed request's answer when the check "has its run closed?" answers late (issue 13 item 4,
 * M12): on the real dev server, Redis and PostgreSQL, with the app's worker running the workflow.
 * A JSON request writes its relay only at the end of the upstream call, so its reader asks Temporal
 * (describe) whether the run is still going after each silent block. While a Temporal server
 * process dies and its shards move, that describe() is retried for seconds and answers after the
 * run has relayed its output and closed: the client must get that output, never a 409 "output has
 * expired" (test/cluster/temporal-server-kill.test.ts saw it in about 2 runs of 17); and a describe
 * that fails outright leaves the read going (bounded by its idle timeout), never a 5xx while the run bills.
 */
import { createHash } from 'node:crypto';
import { ServiceError } from '@temporalio/client';
import type { ChatCompletionRequest } from '../../src/openai/chat-request';
import type { RelayEntry } from '../../src/redis/request-relay';
import type { BilledRequests } from '../../src/services/billed-requests';
import type { BilledRequestClient } from '../../src/workflows/client';
import { billedRequestWorkflowId } from '../../src/workflows/definitions';
import { TEST_MODEL } from '../helpers/app';
import { useBilledRequestsHarness } from '../helpers/billed-requests-harness';
import { settled } from '../helpers/ledger';
import { uniqueId } from '../helpers/services';

describe('billed request relay with a late describe (issue 13 item 4)', () => {
  const harness = useBilledRequestsHarness('late-describe');

  /** A BilledRequests on the real client, relay and stores, with `isFinished` as given; every check is recorded. */
  function billedRequests(isFinished: (requestId: string, real: BilledRequestClient) => Promise<boolean>) {
    const checks: string[] = [];
    const requests = harness().billedRequests((real) => ({
      ...real,
      isFinished: (requestId) => {
        checks.push(requestId);
        return isFinished(requestId, real);
      },
    }));
    return { requests, workflows: harness().workflows(), checks };
  }

  /** One JSON request of 20 tokens 100 ms apart: its relay stays empty for 2 s, past the reader's first 1-s block. */
  async function jsonRequest(requests: BilledRequests, tenant: { tenantId: string; apiKeyId: string }): Promise<{ requestId: string; entries: RelayEntry[] }> {
    const origin = { tenantId: tenant.tenantId, apiKeyId: tenant.apiKeyId };
    const body: ChatCompletionRequest = { model: TEST_MODEL, messages: [{ role: 'user', content: 'late describe [mock:tokens=20] [mock:latency=100]' }] };
    const raw = Buffer.from(JSON.stringify(body), 'utf8');
    const requestId = requests.requestId(origin);
    const input = await requests.prepare(origin, requestId, body, createHash('sha256').update(raw).digest('hex'));
    expect(input.relayMode).toBe('redis');
    const output = await requests.admit(input, { take: () => raw }, new AbortController().signal);
    const entries: RelayEntry[] = [];
    for await (const entry of output) entries.push(entry);
    return { requestId, entries };
  }

  /** The client got the whole answer, and the ledger has one committed row billing exactly that. */
  async function expectDeliveredAndBilledOnce(tenantId: string, requestId: string, entries: RelayEntry[]): Promise<void> {
    expect(entries.map((e) => e.type)).toEqual(['response', 'done']);
    const usage = (entries[0] as { data: { usage: { prompt_tokens: number; completion_tokens: number } } }).data.usage;
    expect(usage.completion_tokens).toBe(20);
    const { db } = harness();
    await settled(db, tenantId);
    const rows: Array<{ request_id: string; status: string; prompt_tokens: number; completion_tokens: number; amount_micros: string }> =
      await db('billing_transaction').where({ tenant_id: tenantId, kind: 'usage' });
    expect(rows.map((r) => ({ id: r.request_id, status: r.status, prompt: r.prompt_tokens, completion: r.completion_tokens })))
      .toEqual([{ id: requestId, status: 'committed', prompt: usage.prompt_tokens, completion: 20 }]);
    // 1 micro per prompt token, 2 per completion token.
    expect(Number(rows[0]!.amount_micros)).toBe(usage.prompt_tokens + 2 * 20);
  }

  it('relays the output of a JSON request whose run closed while the describe of its reader was on its way', async () => {
    // The real describe, answered only once the run has closed (as when the SDK retries it on the
    // surviving frontend until the dead process's shard has moved, and the run finished meanwhile).
    const { requests, workflows, checks } = billedRequests(async (requestId, real) => {
      await harness().env.client.workflow.getHandle(billedRequestWorkflowId(requestId)).result();
      return real.isFinished(requestId);
    });
    const t = await harness().app.tenant();
    const { requestId, entries } = await jsonRequest(requests, t);
    // The path under test ran: the reader asked while the relay did not exist, and heard "closed".
    expect(checks[0]).toBe(requestId);
    expect(await workflows.isFinished(requestId)).toBe(true);
    await expectDeliveredAndBilledOnce(t.tenantId, requestId, entries);
  }, 60_000);

  it('keeps reading when Temporal cannot say whether the run closed', async () => {
    // The describe fails as it does once the SDK gives up on an unavailable frontend; later ones answer.
    const { requests, checks } = billedRequests(async (requestId, real) => {
      if (checks.length === 1) throw new ServiceError('Failed to describe workflow: 14 UNAVAILABLE: connection refused');
      return real.isFinished(requestId);
    });
    const t = await harness().app.tenant();
    const { requestId, entries } = await jsonRequest(requests, t);
    expect(checks[0]).toBe(requestId);
    await expectDeliveredAndBilledOnce(t.tenantId, requestId, entries);
  }, 60_000);

  it('takes a run that is gone (past retention, never started) for finished', async () => {
    const { workflows } = billedRequests(() => Promise.resolve(false));
    expect(await workflows.isFinished(uniqueId('req-never-started'))).toBe(true);
  });
});
