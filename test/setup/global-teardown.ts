/** Stops every service global setup started and removes its data directory. */
import fs from 'node:fs';

export default async function globalTeardown(): Promise<void> {
  const running = globalThis.__BILLING_TEST_STACK__;
  if (!running) return;
  await running.stack.stop();
  fs.rmSync(running.dataDir, { recursive: true, force: true });
  globalThis.__BILLING_TEST_STACK__ = undefined;
}
