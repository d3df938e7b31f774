/**
 * Runs the mock upstream on its own: `tsx src/upstream/mock/main.ts`.
 * Listens on MOCK_UPSTREAM_PORT (API_HOST's interface) and stops cleanly on
 * SIGINT/SIGTERM, so hung test requests do not keep the process alive.
 */
import { loadConfig } from '../../config';
import { createLogger } from '../../log';
import { startMockUpstream } from './server';

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL, 'mock-upstream');
  const mock = await startMockUpstream({ port: config.MOCK_UPSTREAM_PORT, host: config.API_HOST });
  log.info({ url: mock.url, port: mock.port }, 'mock upstream listening');

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, stats: mock.stats() }, 'mock upstream stopping');
    mock.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'mock upstream did not close cleanly');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  // The logger may not exist yet (bad config), so this goes to stderr directly.
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
