/**
 * knex's own warnings go to the service's JSON log, one line, never the console (issue 14: while
 * the soak's PostgreSQL restarted, every pool acquire printed a multi-line stack with console.log,
 * past the logger and its redaction). A real pool against a port nothing listens on.
 */
import { Writable } from 'node:stream';
import { createDb } from '../../src/db/knex';
import { createLogger } from '../../src/log';
import { freePort } from '../../src/embedded/child';

describe('the ledger database client logs through the service logger', () => {
  it('a failed connection acquire is one debug entry, nothing on the console', async () => {
    const entries: Array<Record<string, unknown>> = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, done) { entries.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done(); } });
    const consoleLog = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const db = createDb(`postgres://x@127.0.0.1:${await freePort()}/db`, { max: 1 }, createLogger('debug', 'knex-log-test', sink));
    try {
      await expect(db.raw('SELECT 1')).rejects.toThrow(/ECONNREFUSED/);
      expect(consoleLog).not.toHaveBeenCalled();
      const warning = entries.find((e) => e.msg === 'database client warning');
      expect(warning?.knex).toMatch(/^Acquire connection error: .*ECONNREFUSED/);
      expect(String(warning?.knex)).not.toContain('\n');
    } finally {
      consoleLog.mockRestore();
      await db.destroy();
    }
  });
});
