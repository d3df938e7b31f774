/**
 * Replay tests (issue 3): every recorded history in test/fixtures/histories must
 * replay against today's workflow code without nondeterminism, so a change that
 * would break running billed requests (reordered steps, a removed activity, a new
 * command before an old one) fails the suite. Exactly once (M3.5, M12) depends on
 * it: a workflow that cannot replay leaves its reservation pending.
 *
 * Re-record the fixtures with `npx tsx scripts/record-histories.ts` only for a
 * deliberately incompatible change shipped behind patched() or a new workflow type.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { historyFromFixtureJSON } from '../fixtures/history-json';
import { testDataConverter, workflowBundle } from '../helpers/temporal';

const HISTORIES_DIR = path.resolve(__dirname, '..', 'fixtures', 'histories');
const workflowsPath = require.resolve('../../src/workflows');
const reorderedWorkflowsPath = require.resolve('../fixtures/reordered-workflows');
const unpatchedWorkflowsPath = require.resolve('../fixtures/unpatched-workflows');

/** The paths scripts/record-histories.ts records; a lost fixture must fail the suite too. */
const EXPECTED_FIXTURES = ['client-cancelled', 'denied', 'settled-conversation-before-append', 'settled-conversation-result-mode-before-patch', 'settled-embeddings', 'settled-responses-stream', 'settled-result-relay', 'settled-stream', 'upstream-failed-voided'];

function loadFixtures(): HistoryAndWorkflowId[] {
  return fs
    .readdirSync(HISTORIES_DIR)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => ({
      workflowId: path.basename(file, '.json'),
      history: historyFromFixtureJSON(JSON.parse(fs.readFileSync(path.join(HISTORIES_DIR, file), 'utf8'))),
    }));
}

/** Replays with the app's data converter: the fixtures were recorded without a codec, and decoding passes plain payloads through. */
async function replayAll(bundlePath: string, histories: HistoryAndWorkflowId[], replayName: string): Promise<ReplayResult[]> {
  const results: ReplayResult[] = [];
  const dataConverter = testDataConverter();
  for await (const result of Worker.runReplayHistories({ workflowBundle: await workflowBundle(bundlePath), replayName, dataConverter }, histories)) {
    results.push(result);
  }
  return results;
}

describe('billedRequest replay of recorded histories (issue 3)', () => {
  const fixtures = loadFixtures();

  it('has a fixture for every representative path', () => {
    expect(fixtures.map((f) => f.workflowId)).toEqual(EXPECTED_FIXTURES);
  });

  it('M12: every recorded history replays against the current workflow code without nondeterminism (plain fixtures, codec in place)', async () => {
    const results = await replayAll(workflowsPath, fixtures, 'billed-request-replay');
    expect(results.map((r) => ({ workflowId: r.workflowId, error: r.error }))).toEqual(
      EXPECTED_FIXTURES.map((workflowId) => ({ workflowId, error: undefined })),
    );
  });

  it('the check can fail: a workflow that routes before admission is reported as a DeterminismViolationError', async () => {
    const settled = fixtures.filter((f) => f.workflowId === 'settled-stream');
    expect(settled).toHaveLength(1);
    const results = await replayAll(reorderedWorkflowsPath, settled, 'billed-request-replay-reordered');
    expect(results).toHaveLength(1);
    const error = results[0]!.error;
    expect(error).toBeInstanceOf(DeterminismViolationError);
    expect(error?.message).toMatch(/nondetermin/i);
  });

  it('M7/M12: a committed conversation request recorded before ConversationAppendStep replays only because the step is behind patched()', async () => {
    const before = fixtures.filter((f) => f.workflowId === 'settled-conversation-before-append');
    expect(before).toHaveLength(1);
    // The history really is a conversation request from before the step: no patch marker, no append activity.
    const text = JSON.stringify(before[0]!.history);
    expect(text).not.toContain('conversation-append-step');
    expect(text).not.toContain('conversationAppendStep');
    const results = await replayAll(unpatchedWorkflowsPath, before, 'billed-request-replay-unpatched');
    expect(results).toHaveLength(1);
    expect(results[0]!.error).toBeInstanceOf(DeterminismViolationError);
    // The new activity meets the old history's completion: exactly the mismatch patched() prevents.
    expect(results[0]!.error?.message).toMatch(/Activity machine does not handle this event: HistoryEvent\(id: \d+, WorkflowExecutionCompleted\)/);
  });
});
