/**
 * Typed context (M9): typed fields (M9.1), the untyped get/set by key kept working on
 * the same values (M9.2), two fields claiming one key refused when the fields are built
 * (M9.3), values that survive JSON only; and the billed request's own fields build.
 */
import {
  ContextValueError,
  DuplicateContextKeyError,
  TypedContextFields,
  WorkflowContext,
  contextField,
} from '../../src/workflows/typed-context';
import { BilledRequestFields, billedRequestContext } from '../../src/workflows/billed-request-context';
import type { AdmissionDecision } from '../../src/workflows/definitions';

const admission: AdmissionDecision = { admitted: true, reservedMicros: 210, path: 'redis', duplicate: false };

describe('typed context (M9)', () => {
  it('M9.1 a typed field gives back what was set under it, with its type', () => {
    const fields = new TypedContextFields({ admission: contextField<AdmissionDecision>('admission'), tries: contextField<number>('tries') });
    const ctx = fields.create();
    expect(ctx.get(fields.fields.admission)).toBeUndefined();
    ctx.set(fields.fields.admission, admission);
    ctx.set(fields.fields.tries, 2);
    const read = ctx.get(fields.fields.admission);
    // Typed: reading `reservedMicros` needs no cast once `admitted` is narrowed.
    expect(read?.admitted === true ? read.reservedMicros : -1).toBe(210);
    expect(ctx.require(fields.fields.tries) + 1).toBe(3);
    // @ts-expect-error a number field does not take a string (the type check is the point of M9.1)
    ctx.set(fields.fields.tries, 'three');
  });

  it('M9.1 require() of a field no step has set throws instead of handing back undefined', () => {
    const fields = new TypedContextFields({ outcome: contextField<{ status: string }>('upstream.outcome') });
    expect(() => fields.create().require(fields.fields.outcome)).toThrow('context field "upstream.outcome" read before any step set it');
  });

  it('M9.2 the untyped get/set by key reads and writes the same values as the typed fields', () => {
    const fields = new TypedContextFields({ admission: contextField<AdmissionDecision>('admission') });
    const ctx = fields.create();
    ctx.set('admission', admission);
    expect(ctx.get(fields.fields.admission)).toEqual(admission);
    ctx.set(fields.fields.admission, { admitted: false, reason: 'insufficient_quota', path: 'redis' });
    expect(ctx.get('admission')).toEqual({ admitted: false, reason: 'insufficient_quota', path: 'redis' });
    ctx.set('legacy.note', 'kept by key only');
    expect(ctx.get('legacy.note')).toBe('kept by key only');
    expect(ctx.has('legacy.note')).toBe(true);
    expect(ctx.has('never.set')).toBe(false);
  });

  it('M9.3 two fields claiming one key fail when the fields are built, naming both', () => {
    const build = (): unknown => new TypedContextFields({
      outcome: contextField<string>('upstream.outcome'),
      result: contextField<number>('upstream.outcome'),
    });
    expect(build).toThrow(DuplicateContextKeyError);
    expect(build).toThrow('context fields "outcome" and "result" both claim the key "upstream.outcome"');
  });

  it('M9.3 the billed request\'s own fields build (module load is the start-up check) with one key each', () => {
    const keys = Object.values(BilledRequestFields).map((f) => f.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys).toEqual(['admission', 'upstream.outcome', 'upstream.done', 'settlement']);
    expect(billedRequestContext.create()).toBeInstanceOf(WorkflowContext);
  });

  it('refuses values that would not survive JSON (so a replay sees the same values), at set time', () => {
    const ctx = new WorkflowContext();
    expect(() => ctx.set('when', new Date())).toThrow(ContextValueError);
    expect(() => ctx.set('bad', { nested: [1, Number.NaN] })).toThrow('bad.nested[1]: NaN is not a JSON number');
    expect(() => ctx.set('fn', () => 1)).toThrow('fn: a function is not JSON-serialisable');
    expect(() => ctx.set('map', new Map())).toThrow(ContextValueError);
    expect(ctx.has('when')).toBe(false);
  });

  it('a context round-trips through JSON unchanged', () => {
    const fields = new TypedContextFields({ admission: contextField<AdmissionDecision>('admission'), done: contextField<boolean>('upstream.done') });
    const ctx = fields.create();
    ctx.set(fields.fields.admission, admission);
    ctx.set(fields.fields.done, false);
    const copy = WorkflowContext.fromJSON(JSON.parse(JSON.stringify(ctx)) as Record<string, unknown>);
    expect(copy.get(fields.fields.admission)).toEqual(admission);
    expect(copy.get(fields.fields.done)).toBe(false);
    expect(copy.toJSON()).toEqual(ctx.toJSON());
  });

  it('refuses a malformed key', () => {
    expect(() => contextField('')).toThrow('invalid context key');
    expect(() => contextField('1abc')).toThrow('invalid context key');
  });
});
