/**
 * What the sweeper hands BillingStep (src/sweeper/settlement-input.ts), as plain
 * functions: a history's input is used only for the row it belongs to, a history's
 * upstream outcome only when well-formed, and a row without history becomes the
 * minimal input (current price; a void needs none, a delivery without a price is refused).
 */
import type { LedgerEntry } from '../../src/db/ledger-types';
import {
  HistoryInputMismatchError,
  HistoryOutcomeInvalidError,
  SweepPriceMissingError,
  UnsweepableRowError,
  inputFromHistory,
  inputFromLedger,
  outcomeFromHistory,
} from '../../src/sweeper/settlement-input';

const ENTRY: LedgerEntry = {
  id: 1, requestId: 'req-1', tenantId: 'tenant-1', apiKeyId: 'key-1', kind: 'usage', status: 'pending', workflowId: 'billed-request:req-1',
  model: 'gpt-test', reservedMicros: 210, admissionPath: 'redis', amountMicros: null, promptTokens: 10, completionTokens: null, tokenSource: null,
  failureReason: null, createdAt: new Date(0), updatedAt: new Date(0), committedAt: null, voidedAt: null,
};

const PRICE = { model: 'gpt-test', inputPriceMicrosPerMtok: 1_000_000, outputPriceMicrosPerMtok: 2_000_000, maxOutputTokens: 100 };

const HISTORY_INPUT = {
  requestId: 'req-1', tenantId: 'tenant-1', apiKeyId: 'key-1', model: 'gpt-test', price: PRICE, promptTokens: 10, maxOutputTokens: 100,
  reservedMicros: 210, stream: true, includeUsage: true, relayMode: 'redis', bodyRef: { requestId: 'req-1' },
};

describe('inputFromHistory', () => {
  it('returns the history input of the row it belongs to unchanged', () => {
    expect(inputFromHistory(HISTORY_INPUT, ENTRY)).toEqual(HISTORY_INPUT);
  });

  it.each([
    ['requestId', { requestId: 'req-2' }],
    ['tenantId', { tenantId: 'tenant-2' }],
    ['apiKeyId', { apiKeyId: 'key-2' }],
    ['price', { price: { ...PRICE, inputPriceMicrosPerMtok: 1.5 } }],
    ['promptTokens', { promptTokens: -1 }],
    ['relayMode', { relayMode: 'carrier-pigeon' }],
  ])('refuses an input whose %s does not fit the row', (field, change) => {
    expect(() => inputFromHistory({ ...HISTORY_INPUT, ...change }, ENTRY)).toThrow(new HistoryInputMismatchError('req-1', field));
  });

  it('refuses something that is not an input at all', () => {
    expect(() => inputFromHistory(['req-1'], ENTRY)).toThrow(HistoryInputMismatchError);
  });
});

describe('outcomeFromHistory', () => {
  const completed = { status: 'completed', promptTokens: 10, completionTokens: 20, tokenSource: 'upstream', channel: 'default' };

  it('passes a well-formed outcome, and null for "no UpstreamCallStep completed"', () => {
    expect(outcomeFromHistory(completed, 'req-1')).toEqual(completed);
    expect(outcomeFromHistory(null, 'req-1')).toBeNull();
  });

  it.each([
    ['status', { status: 'maybe' }],
    ['completionTokens', { completionTokens: '20' }],
    ['tokenSource', { tokenSource: 'guess' }],
  ])('refuses an outcome with a bad %s', (field, change) => {
    expect(() => outcomeFromHistory({ ...completed, ...change }, 'req-1')).toThrow(new HistoryOutcomeInvalidError('req-1', field));
  });
});

describe('inputFromLedger (no history)', () => {
  it('rebuilds the input from the row and the current price, reading the relay (mode redis)', () => {
    expect(inputFromLedger(ENTRY, { ...PRICE, inputPriceMicrosPerMtok: 3_000_000 }, false)).toEqual({
      requestId: 'req-1', tenantId: 'tenant-1', apiKeyId: 'key-1', model: 'gpt-test',
      price: { ...PRICE, inputPriceMicrosPerMtok: 3_000_000 }, promptTokens: 10, maxOutputTokens: 100, reservedMicros: 210,
      stream: true, includeUsage: false, relayMode: 'redis', bodyRef: { requestId: 'req-1' },
    });
  });

  it('needs no price when nothing was delivered (a void), and refuses to bill a delivery without one', () => {
    expect(inputFromLedger(ENTRY, null, false).price).toEqual({ model: 'gpt-test', inputPriceMicrosPerMtok: 0, outputPriceMicrosPerMtok: 0, maxOutputTokens: 1 });
    expect(() => inputFromLedger(ENTRY, null, true)).toThrow(SweepPriceMissingError);
  });

  it('reads the relay as the operation the row names (issue 11): an embeddings estimate has no output side', () => {
    expect(inputFromLedger({ ...ENTRY, operation: 'embeddings' }, PRICE, true)).toMatchObject({ operation: 'embeddings', maxOutputTokens: 0 });
    expect(inputFromLedger({ ...ENTRY, operation: 'responses' }, PRICE, true)).toMatchObject({ operation: 'responses', maxOutputTokens: 100 });
    expect(inputFromLedger({ ...ENTRY, operation: 'chat' }, PRICE, true)).not.toHaveProperty('operation');
  });

  it('refuses a row without a key or a model', () => {
    expect(() => inputFromLedger({ ...ENTRY, apiKeyId: null }, PRICE, false)).toThrow(new UnsweepableRowError('req-1', 'api key'));
    expect(() => inputFromLedger({ ...ENTRY, model: null }, null, false)).toThrow(new UnsweepableRowError('req-1', 'model'));
  });
});
