/**
 * usageTokenClasses (issue 11): the one reader of a chat-completions usage's details.
 */
import { plainTokenClasses, toChatUsage, usageTokenClasses } from '../../src/billing/token-classes';

describe('usageTokenClasses', () => {
  it('reads cached, audio and reasoning tokens from the chat-completions details', () => {
    expect(usageTokenClasses({
      prompt_tokens: 2_006,
      completion_tokens: 300,
      prompt_tokens_details: { cached_tokens: 1_920, audio_tokens: 6 },
      completion_tokens_details: { reasoning_tokens: 256, audio_tokens: 10, accepted_prediction_tokens: 0 },
    })).toEqual({ promptTokens: 2_006, completionTokens: 300, cachedPromptTokens: 1_920, audioPromptTokens: 6, reasoningTokens: 256, audioCompletionTokens: 10 });
  });

  it('treats absent details as 0 and a usage without valid counts as none', () => {
    expect(usageTokenClasses({ prompt_tokens: 5, completion_tokens: 2 })).toEqual(plainTokenClasses({ promptTokens: 5, completionTokens: 2 }));
    expect(usageTokenClasses({ prompt_tokens: 5, completion_tokens: 2, prompt_tokens_details: null, completion_tokens_details: null })).toEqual(plainTokenClasses({ promptTokens: 5, completionTokens: 2 }));
    expect(usageTokenClasses(null)).toBeNull();
    expect(usageTokenClasses(undefined)).toBeNull();
    expect(usageTokenClasses({ prompt_tokens: '5', completion_tokens: 2 })).toBeNull();
    expect(usageTokenClasses({ prompt_tokens: 5, completion_tokens: -1 })).toBeNull();
  });

  it('ignores a malformed detail, or one larger than its count (billed at the full price, never below)', () => {
    expect(usageTokenClasses({ prompt_tokens: 10, completion_tokens: 4, prompt_tokens_details: { cached_tokens: 11 }, completion_tokens_details: { reasoning_tokens: 5 } }))
      .toEqual(plainTokenClasses({ promptTokens: 10, completionTokens: 4 }));
    expect(usageTokenClasses({ prompt_tokens: 10, completion_tokens: 4, prompt_tokens_details: { cached_tokens: 2.5 }, completion_tokens_details: { reasoning_tokens: '3' } }))
      .toEqual(plainTokenClasses({ promptTokens: 10, completionTokens: 4 }));
    expect(usageTokenClasses({ prompt_tokens: 10, completion_tokens: 4, prompt_tokens_details: { cached_tokens: 10 } })!.cachedPromptTokens).toBe(10);
  });
});

describe('toChatUsage', () => {
  it('answers the billed counts, with details only when a class is reported', () => {
    expect(toChatUsage({ promptTokens: 5, completionTokens: 2 })).toEqual({ prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 });
    expect(toChatUsage({ ...plainTokenClasses({ promptTokens: 5, completionTokens: 2 }), cachedPromptTokens: 3 })).toEqual({
      prompt_tokens: 5, completion_tokens: 2, total_tokens: 7, prompt_tokens_details: { cached_tokens: 3, audio_tokens: 0 },
    });
    expect(toChatUsage({ ...plainTokenClasses({ promptTokens: 5, completionTokens: 2 }), reasoningTokens: 1 })).toEqual({
      prompt_tokens: 5, completion_tokens: 2, total_tokens: 7, completion_tokens_details: { reasoning_tokens: 1, audio_tokens: 0 },
    });
  });

  it('round-trips through usageTokenClasses', () => {
    const classes = { promptTokens: 50, completionTokens: 9, cachedPromptTokens: 40, audioPromptTokens: 1, reasoningTokens: 7, audioCompletionTokens: 2 };
    expect(usageTokenClasses(toChatUsage(classes))).toEqual(classes);
  });
});
