/**
 * Shared Lua (M1.2): Redis scripts cannot include one another, so the loader prepends
 * the lua/lib/*.lua files a script requires. These tests pin the assembly (order, each
 * library once, cycles and bad names refused), that the script files docs/requirements.md names (M1.2) keep
 * their own headers, that the SHA is the assembled source's, and the exact arity
 * messages the shared helper builds for every script.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Redis } from '../../src/redis/client';
import { assembleLuaSource, LUA_DIR, LuaLibraryError, luaScript, QuotaScriptName } from '../../src/redis/scripts';
import { testRedis } from '../helpers/services';
import { rawEval } from './quota-fixtures';

function file(relPath: string): string {
  return readFileSync(path.join(LUA_DIR, relPath), 'utf8');
}

describe('assembleLuaSource (M1.2 shared Lua prepended by the loader)', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'lua-libs-'));
    mkdirSync(path.join(dir, 'lib'));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  function write(files: Record<string, string>): void {
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  }

  it('puts each library once, after its own requirements, then the script', () => {
    write({
      'lib/base.lua': 'local base = 1\n',
      'lib/middle.lua': '-- requires: lib/base.lua\nlocal middle = base + 1\n',
      'main.lua': '-- requires: lib/middle.lua, lib/base.lua\nreturn middle\n',
    });
    expect(assembleLuaSource('main', dir)).toBe(
      'local base = 1\n' + '-- requires: lib/base.lua\nlocal middle = base + 1\n' + '-- requires: lib/middle.lua, lib/base.lua\nreturn middle\n',
    );
  });

  it('returns a script that requires nothing unchanged, ending every part with a newline', () => {
    write({ 'plain.lua': 'return 1', 'lib/last.lua': 'local x = 2', 'uses.lua': '-- requires: lib/last.lua\nreturn x' });
    expect(assembleLuaSource('plain', dir)).toBe('return 1\n');
    expect(assembleLuaSource('uses', dir)).toBe('local x = 2\n-- requires: lib/last.lua\nreturn x\n');
  });

  it('refuses libraries that require each other in a cycle', () => {
    write({
      'lib/a.lua': '-- requires: lib/b.lua\n',
      'lib/b.lua': '-- requires: lib/a.lua\n',
      'main.lua': '-- requires: lib/a.lua\n',
    });
    expect(() => assembleLuaSource('main', dir)).toThrow(LuaLibraryError);
    expect(() => assembleLuaSource('main', dir)).toThrow('Lua libraries require each other in a cycle: main.lua -> lib/a.lua -> lib/b.lua -> lib/a.lua');
  });

  it('refuses a requirement outside lua/lib', () => {
    write({ 'main.lua': '-- requires: ../secret.lua\nreturn 1\n' });
    expect(() => assembleLuaSource('main', dir)).toThrow(new LuaLibraryError('main.lua requires "../secret.lua": expected lib/<name>.lua'));
  });
});

describe('the quota scripts as assembled (M1.2)', () => {
  it.each([QuotaScriptName.quotaCheck, QuotaScriptName.quotaDeduct, QuotaScriptName.apiKeyBudgetDeduct])(
    'M1.2 %s.lua still starts with its own header naming KEYS, ARGV and the return value',
    (name) => {
      const text = file(`${name}.lua`);
      expect(text.startsWith(`--[[\n${name}.lua: `)).toBe(true);
      const header = text.slice(0, text.indexOf('\n]]\n'));
      expect(header).toContain('KEYS[1]');
      expect(header).toContain('ARGV[1]');
      expect(header).toMatch(/\nReturns/);
    },
  );

  it('M3.2 M3.3 both settle scripts run the one settle_to_cost, after the integer helpers it needs', () => {
    const integers = file('lib/integers.lua');
    const settle = file('lib/settle.lua');
    expect(assembleLuaSource(QuotaScriptName.quotaDeduct)).toBe(integers + settle + file('quota_deduct.lua'));
    expect(assembleLuaSource(QuotaScriptName.apiKeyBudgetDeduct)).toBe(integers + settle + file('apikey_budget_deduct.lua'));
    expect(assembleLuaSource(QuotaScriptName.quotaCheck)).toBe(integers + file('quota_check.lua'));
    expect(assembleLuaSource(QuotaScriptName.cacheWarmup)).toBe(integers + file('cache_warmup.lua'));
    expect(assembleLuaSource(QuotaScriptName.quotaRelease)).toBe(integers + file('quota_release.lua'));
    expect(assembleLuaSource('quota_limit_raise')).toBe(integers + file('quota_limit_raise.lua'));
  });

  it('M1.2 the SHA Redis files a script under is the SHA1 of the assembled source, computed once', () => {
    for (const name of [...Object.values(QuotaScriptName), 'quota_limit_raise']) {
      const loaded = luaScript(name);
      expect(loaded.source).toBe(assembleLuaSource(name));
      expect(loaded.sha).toBe(createHash('sha1').update(assembleLuaSource(name)).digest('hex'));
      expect(luaScript(name)).toBe(loaded);
    }
  });
});

describe('arity errors from the shared helper keep each script\'s message (M1.2)', () => {
  let redis: Redis;

  beforeAll(async () => {
    redis = await testRedis();
  });

  afterAll(async () => {
    await redis.quit();
  });

  it.each([
    [QuotaScriptName.quotaCheck, ['a', 'b'], ['1', '60', 'k', '1'], 'ERR quota_check expects 3 keys, got 2'],
    [QuotaScriptName.quotaCheck, ['a', 'b', 'c'], ['1', '60', 'k', '1', 'x'], 'ERR quota_check expects 4 arguments, got 5'],
    [QuotaScriptName.quotaDeduct, ['a'], ['1', '60', '0'], 'ERR quota_deduct expects 2 keys, got 1'],
    [QuotaScriptName.quotaDeduct, ['a', 'b'], [], 'ERR quota_deduct expects 3 arguments, got 0'],
    [QuotaScriptName.apiKeyBudgetDeduct, ['a', 'b', 'c'], ['1', '60', '0'], 'ERR apikey_budget_deduct expects 2 keys, got 3'],
    [QuotaScriptName.apiKeyBudgetDeduct, ['a', 'b'], ['1', '60'], 'ERR apikey_budget_deduct expects 3 arguments, got 2'],
  ])('%s with keys %j and ARGV %j answers %s', async (name, keys, argv, message) => {
    await expect(rawEval(redis, name, keys, argv)).rejects.toThrow(new Error(message));
  });

  it('quota_limit_raise speaks of 1 key and 1 argument in the singular', async () => {
    const { source } = luaScript('quota_limit_raise');
    await expect(redis.eval(source, 2, 'a', 'b', '1')).rejects.toThrow(new Error('ERR quota_limit_raise expects 1 key, got 2'));
    await expect(redis.eval(source, 1, 'a')).rejects.toThrow(new Error('ERR quota_limit_raise expects 1 argument, got 0'));
    await expect(redis.eval(source, 1, 'a', '-3')).rejects.toThrow(new Error('ERR limit_micros must not be negative'));
  });
});
