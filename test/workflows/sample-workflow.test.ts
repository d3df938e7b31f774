/**
 * The example every new workflow test can copy (M10): a ready environment from
 * test/helpers/temporal.ts, a worker on a fresh task queue, a real workflow run.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { devServerEnv, timeSkippingEnv, withWorker } from '../helpers/temporal';
import { sampleGreeting, type SampleActivities } from '../fixtures/sample-workflows';
import { uniqueId } from '../helpers/services';

const workflowsPath = require.resolve('../fixtures/sample-workflows');
const activities: SampleActivities = { greet: (name) => Promise.resolve(`hello, ${name}`) };

describe('test helpers: Temporal environments', () => {
  it('time-skipping server skips a one-day timer and runs the activity', async () => {
    const env: TestWorkflowEnvironment = await timeSkippingEnv();
    try {
      const greet = jest.fn(activities.greet);
      const result = await withWorker(env, { workflowsPath, activities: { greet } }, (taskQueue) =>
        env.client.workflow.execute(sampleGreeting, { taskQueue, workflowId: uniqueId('sample'), args: ['tenant-a'] }),
      );
      expect(result).toBe('hello, tenant-a');
      expect(greet).toHaveBeenCalledTimes(1);
    } finally {
      await env.teardown();
    }
  });

  it('dev server env has the custom search attributes registered', async () => {
    const env = await devServerEnv();
    try {
      const res = await env.connection.operatorService.listSearchAttributes({ namespace: env.namespace ?? 'default' });
      expect(Object.keys(res.customAttributes)).toEqual(expect.arrayContaining(['TenantId', 'ApiKeyId', 'Model', 'RequestStatus']));
    } finally {
      await env.teardown();
    }
  });
});
