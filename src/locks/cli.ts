/**
 * `npm run locks -- show <conversation_id>` and `npm run locks -- release <conversation_id>`
 * (M7.3): the ops command beside `GET|DELETE /admin/locks/:conversation_id`, for when the API
 * is not at hand. Talks to REDIS_URL, else the embedded Redis of `npm start`.
 */
import { Registry } from 'prom-client';
import { loadConfig } from '../config';
import { createLogger } from '../log';
import { createLockMetrics } from '../metrics';
import { createRedis } from '../redis/client';
import { createScriptRunner } from '../redis/script-runner';
import { createDistributedLock } from './distributed-lock';

const USAGE = 'usage: npm run locks -- show|release <conversation_id>';

async function main(argv: string[]): Promise<number> {
  const [command, conversationId] = argv;
  if ((command !== 'show' && command !== 'release') || !conversationId) {
    console.error(USAGE);
    return 2;
  }
  const config = loadConfig();
  const redis = createRedis(config.REDIS_URL ?? `redis://127.0.0.1:${config.EMBEDDED_REDIS_PORT}`, { lazyConnect: true });
  try {
    await redis.connect();
    const registry = new Registry();
    const locks = createDistributedLock({ redis, run: createScriptRunner(redis, registry), metrics: createLockMetrics(registry), log: createLogger('warn', 'locks') });
    const holder = await locks.inspect(conversationId);
    if (!holder) {
      console.log(`conversation ${conversationId}: not locked`);
      return command === 'show' ? 0 : 1;
    }
    const line = `conversation ${conversationId}: locked, fence ${holder.fence}, since ${holder.acquiredAt.toISOString()}, expires in ${holder.expiresInMs} ms${holder.info ? `, ${holder.info}` : ''}`;
    console.log(line);
    if (command === 'release') {
      const released = await locks.forceRelease(conversationId);
      console.log(released ? 'released' : 'it was released meanwhile');
    }
    return 0;
  } finally {
    redis.disconnect();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error((err as Error).message);
    process.exit(1);
  },
);
