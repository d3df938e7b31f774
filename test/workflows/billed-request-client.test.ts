/**
 * Admission when update-with-start fails after the workflow was started (issue 14, found by the
 * fault-injection soak: "Workflow was not started: StartDeduped", "Workflow Task in failed state"
 * while Temporal or a worker restarted). The run exists and admits on its own, so the API must
 * attach to it with the same update id instead of answering 503; only a run that does not exist
 * lets the failure stand. Real dev server and worker; the one fake is the lost answer.
 */
import { Client, Connection } from '@temporalio/client';
import { createBilledRequestClient } from '../../src/workflows/client';
import { billedRequestWorkflowId, type BilledRequestInput } from '../../src/workflows/definitions';
import { startTestApp, TEST_MODEL, TEST_PRICE, type TestApp } from '../helpers/app';
import { settled } from '../helpers/ledger';
import { testDataConverter } from '../helpers/temporal';
import { temporalAddress, testDb, uniqueId } from '../helpers/services';

describe('billed-request client: admission after a lost update-with-start answer', () => {
  const taskQueue = uniqueId('attach');
  let app: TestApp;
  let connection: Connection;
  let client: Client;
  beforeAll(async () => {
    app = await startTestApp({ taskQueue });
    connection = await Connection.connect({ address: temporalAddress() });
    client = new Client({ connection, dataConverter: testDataConverter() });
  }, 60_000);
  afterAll(async () => {
    await connection?.close();
    await app?.stop();
  });

  /** A client whose update-with-start really starts the run, then loses the answer (as a restart does). */
  function losingClient(startsTheRun: boolean): Client {
    const workflow = new Proxy(client.workflow, {
      get(target, prop, receiver) {
        if (prop !== 'executeUpdateWithStart') return Reflect.get(target, prop, receiver) as unknown;
        return async (...args: Parameters<typeof target.executeUpdateWithStart>) => {
          if (startsTheRun) await target.startUpdateWithStart(args[0], { ...args[1], waitForStage: 'ACCEPTED' } as never);
          throw new Error('Workflow was not started: StartDeduped');
        };
      },
    });
    return new Proxy(client, { get: (target, prop, receiver) => (prop === 'workflow' ? workflow : Reflect.get(target, prop, receiver) as unknown) });
  }

  async function input(): Promise<BilledRequestInput> {
    const t = await app.tenant();
    const requestId = uniqueId('req');
    return {
      requestId, tenantId: t.tenantId, apiKeyId: t.apiKeyId, model: TEST_MODEL,
      price: { model: TEST_MODEL, inputPriceMicrosPerMtok: TEST_PRICE.input_price_micros_per_mtok, outputPriceMicrosPerMtok: TEST_PRICE.output_price_micros_per_mtok, maxOutputTokens: TEST_PRICE.max_output_tokens },
      promptTokens: 10, maxOutputTokens: 16, reservedMicros: 42, stream: false, includeUsage: false, relayMode: 'redis', bodyRef: { requestId },
    };
  }

  it('attaches to the run that was started and returns its admission', async () => {
    const req = await input();
    const admitted = await createBilledRequestClient(losingClient(true), taskQueue).admit(req);
    expect(admitted).toMatchObject({ kind: 'decided', decision: { admitted: true } });
    // One run, one ledger row: the reservation it made (no body stored here, so it is voided, not billed).
    const db = testDb();
    try {
      await settled(db, req.tenantId, 30_000);
      const rows = await db('billing_transaction').where({ request_id: req.requestId });
      expect(rows).toHaveLength(1);
    } finally {
      await db.destroy();
    }
    expect((await client.workflow.getHandle(billedRequestWorkflowId(req.requestId)).describe()).runId).toBeTruthy();
  }, 60_000);

  it('lets the failure stand when no run exists', async () => {
    const req = await input();
    await expect(createBilledRequestClient(losingClient(false), taskQueue).admit(req)).rejects.toThrow('StartDeduped');
  }, 60_000);
});
