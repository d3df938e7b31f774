/**
 * The mock upstream's per-request switches: `[mock:...]` directives, `x-mock-*`
 * headers and their precedence (header > directive > defaults). These let the
 * fault tests of M10.2 / M12 drive the upstream through the whole gateway.
 */
import {
  DEFAULT_MOCK_BEHAVIOUR,
  MockDirectiveError,
  mockBehaviourPatchSchema,
  parseMockDirectives,
  parseMockHeaders,
  resolveMockBehaviour,
  stripMockDirectives,
} from '../../../src/upstream/mock/behaviour';

describe('parseMockDirectives', () => {
  it('reads every directive, several in one message', () => {
    expect(
      parseMockDirectives('hi [mock:omit_usage] [mock:latency=20] [mock:ttfb=50] [mock:hang] [mock:tokens=40] [mock:status=429]'),
    ).toEqual({
      omitUsage: true,
      tokenLatencyMs: 20,
      firstByteLatencyMs: 50,
      hang: true,
      completionTokens: 40,
      status: 429,
    });
  });

  it('maps fail=before / after:N / none onto both failure fields', () => {
    expect(parseMockDirectives('[mock:fail=before]')).toEqual({ failBeforeFirstChunk: true, failAfterChunks: null });
    expect(parseMockDirectives('[mock:fail=after:3]')).toEqual({ failBeforeFirstChunk: false, failAfterChunks: 3 });
    expect(parseMockDirectives('[mock:fail=none]')).toEqual({ failBeforeFirstChunk: false, failAfterChunks: null });
  });

  it('lets a later directive win over an earlier one', () => {
    expect(parseMockDirectives('[mock:tokens=5] text [mock:tokens=7]')).toEqual({ completionTokens: 7 });
  });

  it('returns nothing for text without directives', () => {
    expect(parseMockDirectives('What is [mock] or [mock:] or mock:tokens=3?')).toEqual({});
  });

  it('rejects unknown settings and bad values with MockDirectiveError', () => {
    expect(() => parseMockDirectives('[mock:colour=red]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:tokens=abc]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:tokens=-1]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:status=200]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:fail=sometimes]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:hang=maybe]')).toThrow(MockDirectiveError);
  });

  it('strips directives so they do not change the reply content', () => {
    expect(stripMockDirectives('  Hello [mock:tokens=3] world [mock:hang] ')).toBe('Hello  world');
  });
});

describe('parseMockHeaders', () => {
  it('reads x-mock-* headers with the directive grammar', () => {
    expect(
      parseMockHeaders({
        'x-mock-omit-usage': '1',
        'x-mock-latency': '15',
        'x-mock-ttfb': '30',
        'x-mock-fail': 'after:2',
        'x-mock-hang': 'false',
        'x-mock-tokens': '9',
        'x-mock-status': '503',
        'x-other': 'ignored',
      }),
    ).toEqual({
      omitUsage: true,
      tokenLatencyMs: 15,
      firstByteLatencyMs: 30,
      failBeforeFirstChunk: false,
      failAfterChunks: 2,
      hang: false,
      completionTokens: 9,
      status: 503,
    });
  });

  it('rejects a bad header value', () => {
    expect(() => parseMockHeaders({ 'x-mock-latency': 'soon' })).toThrow(MockDirectiveError);
  });
});

describe('resolveMockBehaviour', () => {
  it('applies header > directive > defaults, field by field', () => {
    const defaults = { ...DEFAULT_MOCK_BEHAVIOUR, completionTokens: 10, tokenLatencyMs: 1, firstByteLatencyMs: 2 };
    const resolved = resolveMockBehaviour(
      defaults,
      parseMockDirectives('[mock:tokens=20] [mock:latency=5] [mock:fail=before]'),
      parseMockHeaders({ 'x-mock-tokens': '30', 'x-mock-fail': 'after:4' }),
    );
    expect(resolved).toEqual({
      ...DEFAULT_MOCK_BEHAVIOUR,
      completionTokens: 30, // header
      tokenLatencyMs: 5, // directive
      firstByteLatencyMs: 2, // default
      failBeforeFirstChunk: false, // header's fail=after cancels the directive's fail=before
      failAfterChunks: 4,
    });
  });

  it('has documented defaults', () => {
    expect(DEFAULT_MOCK_BEHAVIOUR).toEqual({
      completionTokens: 16,
      omitUsage: false,
      tokenLatencyMs: 0,
      firstByteLatencyMs: 0,
      failBeforeFirstChunk: false,
      failAfterChunks: null,
      hang: false,
      status: null,
      cachedTokens: 0,
      reasoningTokens: 0,
      interimUsage: false,
    });
  });

  it('issue 11: cached and reasoning tokens and running usage, by directive or header', () => {
    expect(parseMockDirectives('hi [mock:cached=100] [mock:reasoning=30] [mock:interim_usage]')).toEqual({ cachedTokens: 100, reasoningTokens: 30, interimUsage: true });
    expect(parseMockHeaders({ 'x-mock-cached': '7', 'x-mock-reasoning': '0', 'x-mock-interim-usage': 'false' })).toEqual({ cachedTokens: 7, reasoningTokens: 0, interimUsage: false });
    expect(() => parseMockDirectives('[mock:cached=-1]')).toThrow(MockDirectiveError);
    expect(() => parseMockDirectives('[mock:reasoning=lots]')).toThrow(MockDirectiveError);
  });
});

describe('mockBehaviourPatchSchema', () => {
  it('accepts partial patches and rejects unknown keys or bad values', () => {
    expect(mockBehaviourPatchSchema.parse({ omitUsage: true })).toEqual({ omitUsage: true });
    expect(mockBehaviourPatchSchema.safeParse({ omit_usage: true }).success).toBe(false);
    expect(mockBehaviourPatchSchema.safeParse({ status: 200 }).success).toBe(false);
    expect(mockBehaviourPatchSchema.safeParse({ completionTokens: 1.5 }).success).toBe(false);
  });
});
