/**
 * Typed context (M9): what a workflow's steps share, as named fields with a type.
 *
 * - M9.1 `contextField<T>(key)` defines a field; `ctx.get(field)` / `ctx.set(field, value)`
 *   are typed by it, so a step cannot read the admission decision as an outcome.
 * - M9.2 the older untyped access by key, `ctx.get('key')` / `ctx.set('key', value)`, keeps
 *   working on the same storage: code written against keys sees what typed code wrote, and back.
 * - M9.3 `new TypedContextFields({...})` refuses two fields claiming one key with a
 *   DuplicateContextKeyError. The billed request's fields are built at module load
 *   (./billed-request-context.ts), so a clash stops the worker at start-up, not a request.
 *
 * Values must be JSON-serialisable (plain objects, arrays, strings, finite numbers, booleans,
 * null): a context is rebuilt on replay from the same step results, which Temporal stores as
 * JSON, so anything that does not survive JSON (a Date, a Map, a function, NaN) would make a
 * replayed run see something else than the original. `set` checks it at once, and `toJSON()` /
 * `fromJSON()` round-trip a whole context.
 *
 * Sandbox-safe: no Node built-ins (it runs inside the workflow).
 */

/** A field of the context: its key, and (at the type level only) the type of its value. */
export interface ContextField<T> {
  readonly key: string;
  /** Never set: carries T for the type checker (covariant, so any field is a ContextField<unknown>). */
  readonly __valueType?: T;
}

/** Defines a typed field stored under `key`. */
export function contextField<T>(key: string): ContextField<T> {
  if (!/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/.test(key)) throw new TypeError(`invalid context key ${JSON.stringify(key)}: 1-64 characters, a letter first`);
  return { key };
}

/** Two fields of one context claim the same key (M9.3). */
export class DuplicateContextKeyError extends Error {
  override name = 'DuplicateContextKeyError';

  constructor(
    readonly key: string,
    readonly fields: readonly [string, string],
  ) {
    super(`context fields "${fields[0]}" and "${fields[1]}" both claim the key "${key}": every field needs a key of its own`);
  }
}

/** A value that does not survive JSON, refused by `set`. */
export class ContextValueError extends TypeError {
  override name = 'ContextValueError';
}

/** Throws ContextValueError unless `value` is plain JSON (an undefined object member counts as absent, as in JSON). */
export function assertJsonValue(value: unknown, path: string): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new ContextValueError(`${path}: ${value} is not a JSON number`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => assertJsonValue(item, `${path}[${i}]`));
    return;
  }
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) throw new ContextValueError(`${path}: a ${(value).constructor?.name ?? 'class instance'} is not plain JSON`);
    for (const [k, v] of Object.entries(value)) if (v !== undefined) assertJsonValue(v, `${path}.${k}`);
    return;
  }
  throw new ContextValueError(`${path}: a ${typeof value} is not JSON-serialisable`);
}

/** The values of one run, typed through fields or untyped through keys. */
export class WorkflowContext {
  private readonly values = new Map<string, unknown>();

  /** The value of a field (typed), or of a key (untyped, M9.2); undefined when never set. */
  get<T>(field: ContextField<T>): T | undefined;
  get(key: string): unknown;
  get(fieldOrKey: ContextField<unknown> | string): unknown {
    return this.values.get(typeof fieldOrKey === 'string' ? fieldOrKey : fieldOrKey.key);
  }

  /** The value of a field that must be set by now (a step ordering mistake throws rather than reading undefined). */
  require<T>(field: ContextField<T>): T {
    if (!this.values.has(field.key)) throw new Error(`context field "${field.key}" read before any step set it`);
    return this.values.get(field.key) as T;
  }

  has(fieldOrKey: ContextField<unknown> | string): boolean {
    return this.values.has(typeof fieldOrKey === 'string' ? fieldOrKey : fieldOrKey.key);
  }

  /** Sets a field (typed) or a key (untyped, M9.2); the value must be plain JSON. */
  set<T>(field: ContextField<T>, value: NoInfer<T>): void;
  set(key: string, value: unknown): void;
  set(fieldOrKey: ContextField<unknown> | string, value: unknown): void {
    const key = typeof fieldOrKey === 'string' ? fieldOrKey : fieldOrKey.key;
    assertJsonValue(value, key);
    this.values.set(key, value);
  }

  /** Every value, by key, as JSON would carry it. */
  toJSON(): Record<string, unknown> {
    return Object.fromEntries(this.values);
  }

  static fromJSON(json: Record<string, unknown>): WorkflowContext {
    const ctx = new WorkflowContext();
    for (const [k, v] of Object.entries(json)) ctx.set(k, v);
    return ctx;
  }
}

/**
 * The fields of one workflow's context, by name. Building it checks that no two fields
 * share a key (M9.3); `create()` gives a run its empty context.
 */
export class TypedContextFields<F extends Record<string, { readonly key: string }>> {
  readonly fields: Readonly<F>;

  constructor(fields: F) {
    const owners = new Map<string, string>();
    for (const [name, field] of Object.entries(fields)) {
      const other = owners.get(field.key);
      if (other !== undefined) throw new DuplicateContextKeyError(field.key, [other, name]);
      owners.set(field.key, name);
    }
    this.fields = Object.freeze({ ...fields });
  }

  create(): WorkflowContext {
    return new WorkflowContext();
  }
}
