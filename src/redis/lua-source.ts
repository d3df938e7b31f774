/**
 * The Lua sources Redis runs. Redis scripts cannot include one another, so shared
 * Lua lives in lua/lib/*.lua: a script names what it needs on a
 * `-- requires: lib/<name>.lua` line and luaScript() prepends those libraries.
 * Redis only ever sees the assembled source, and the SHA is that source's, so a
 * NOSCRIPT reload sends exactly what the SHA names.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export const QuotaScriptName = {
  quotaCheck: 'quota_check',
  quotaDeduct: 'quota_deduct',
  apiKeyBudgetDeduct: 'apikey_budget_deduct',
  cacheWarmup: 'cache_warmup',
  quotaRelease: 'quota_release',
  quotaLimitRaise: 'quota_limit_raise',
  edgeAdmit: 'edge_admit',
  edgeRelease: 'edge_release',
  lockAcquire: 'lock_acquire',
  lockExtend: 'lock_extend',
  lockRelease: 'lock_release',
  windowSettle: 'window_settle',
  windowWarmup: 'window_warmup',
} as const;
export type QuotaScriptName = (typeof QuotaScriptName)[keyof typeof QuotaScriptName];

/** Where the .lua files live: <project root>/lua, found from this file so tsx, jest and node agree. */
export const LUA_DIR = path.resolve(__dirname, '..', '..', 'lua');

/** A script as Redis runs it: its libraries and its own file, and the SHA1 Redis files it under. */
export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

/** Thrown when a `-- requires:` line names something other than lib/<name>.lua, or libraries require each other in a cycle. */
export class LuaLibraryError extends Error {
  override name = 'LuaLibraryError';
}

const REQUIRES_LINE = /^-- requires: (.+)$/gm;
const LIBRARY_PATH = /^lib\/[a-z0-9_]+\.lua$/;

function requiredLibraries(file: string, text: string): string[] {
  const libs = [...text.matchAll(REQUIRES_LINE)].flatMap((m) => (m[1] ?? '').split(',').map((lib) => lib.trim()));
  for (const lib of libs) {
    if (!LIBRARY_PATH.test(lib)) throw new LuaLibraryError(`${file} requires ${JSON.stringify(lib)}: expected lib/<name>.lua`);
  }
  return libs;
}

/**
 * The source Redis runs for lua/<name>.lua: every library it requires, directly or
 * through another library, each once and after its own requirements, then the script.
 * Libraries only define locals, so prepending them changes no script's behaviour.
 */
export function assembleLuaSource(name: string, luaDir: string = LUA_DIR): string {
  const parts: string[] = [];
  const included = new Set<string>();
  const include = (file: string, requiredBy: readonly string[]): void => {
    if (requiredBy.includes(file)) throw new LuaLibraryError(`Lua libraries require each other in a cycle: ${[...requiredBy, file].join(' -> ')}`);
    const text = readFileSync(path.join(luaDir, file), 'utf8');
    for (const lib of requiredLibraries(file, text)) {
      if (!included.has(lib)) include(lib, [...requiredBy, file]);
    }
    included.add(file);
    parts.push(text.endsWith('\n') ? text : `${text}\n`);
  };
  include(`${name}.lua`, []);
  return parts.join('');
}

const scripts = new Map<string, LuaScript>();

/** Assembles lua/<name>.lua once per process; every loader (this runner, the tenant repository) goes through here. */
export function luaScript(name: string): LuaScript {
  let loaded = scripts.get(name);
  if (!loaded) {
    const source = assembleLuaSource(name);
    loaded = { source, sha: createHash('sha1').update(source).digest('hex') };
    scripts.set(name, loaded);
  }
  return loaded;
}
