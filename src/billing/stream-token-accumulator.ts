/**
 * StreamTokenAccumulator (M6): collects what a streamed chat completion
 * produced and decides the usage it is billed for, with three priority levels
 * (M6.3), the level used being part of the result:
 *
 * 1. `upstream`: the upstream reported a usage object (the last valid one wins,
 *    with its token classes, ./token-classes.ts: with `stream_options.include_usage` it
 *    arrives in the final chunk, and an upstream that also sends running usage on earlier
 *    chunks never has those earlier, detail-less figures billed).
 * 2. `tiktoken`: no usage was reported, but the accumulator saw the whole
 *    stream. Completion tokens are tiktoken's count of the accumulated text
 *    (content, refusal, tool-call names and arguments, of every choice); prompt
 *    tokens are `countPromptTokens` of the request messages given at
 *    construction. A stream that produced nothing counts 0 completion tokens at
 *    this level: the client really received nothing.
 * 3. `estimate`: the caller's estimate, used exactly when no usage was reported
 *    and the text cannot be counted honestly:
 *    - the text is unavailable: constructed with `{ textUnavailable: true }`, or
 *      `markTextUnavailable()` was called (part of the stream was not observed), or
 *    - tiktoken threw while counting the prompt (at construction) or the completion.
 *
 * The accumulator holds completion text, never prompt text: only the prompt's
 * token count is kept. Nothing here logs text.
 */
import { InvalidBillingQuantityError, type TokenUsage } from './pricing';
import { plainTokenClasses, usageTokenClasses, type ChatUsageLike, type TokenClasses } from './token-classes';
import { countPromptTokens, countTextTokens, type ChatMessageForCount } from './token-count';

/** Where a request's final usage came from, in priority order. */
export const TokenSource = {
  upstream: 'upstream',
  tiktoken: 'tiktoken',
  estimate: 'estimate',
} as const;
export type TokenSource = (typeof TokenSource)[keyof typeof TokenSource];

/** The usage a request is billed for, its token classes, and how it was obtained. */
export interface FinalTokenUsage extends TokenClasses {
  source: TokenSource;
}

/** The slice of an OpenAI `chat.completion.chunk` the accumulator reads. */
export interface ChatCompletionChunkLike {
  choices?: ReadonlyArray<{
    index?: number;
    delta?: {
      role?: string | null;
      content?: string | null;
      refusal?: string | null;
      tool_calls?: ReadonlyArray<{
        index?: number;
        function?: { name?: string | null; arguments?: string | null } | null;
      }> | null;
    } | null;
  }> | null;
  usage?: ChatUsageLike | null;
}

/** How the request's prompt tokens are known: counted here, or counted before. */
export type StreamTokenAccumulatorOptions = {
  model: string;
  /** The stream's text cannot be observed; finalize() falls back to the estimate. @default false */
  textUnavailable?: boolean;
} & ({ messages: readonly ChatMessageForCount[] } | { promptTokens: number });

interface ChoiceText {
  content: string;
  toolCalls: Map<number, { name: string; arguments: string }>;
}

function isSafeCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export class StreamTokenAccumulator {
  readonly model: string;
  /** Prompt tokens by tiktoken, or null when counting them failed. */
  private readonly promptTokens: number | null;
  private textUnavailable: boolean;
  private usage: TokenClasses | null = null;
  private readonly choices = new Map<number, ChoiceText>();

  constructor(options: StreamTokenAccumulatorOptions) {
    this.model = options.model;
    this.textUnavailable = options.textUnavailable ?? false;
    if ('promptTokens' in options) {
      if (!isSafeCount(options.promptTokens)) throw new InvalidBillingQuantityError('promptTokens', options.promptTokens);
      this.promptTokens = options.promptTokens;
    } else {
      this.promptTokens = StreamTokenAccumulator.tryCountPrompt(options.messages, options.model);
    }
  }

  private static tryCountPrompt(messages: readonly ChatMessageForCount[], model: string): number | null {
    try {
      return countPromptTokens(messages, model);
    } catch {
      return null; // level 3 (estimate) will be used; see the module comment.
    }
  }

  private choice(index: number): ChoiceText {
    let choice = this.choices.get(index);
    if (choice === undefined) {
      choice = { content: '', toolCalls: new Map() };
      this.choices.set(index, choice);
    }
    return choice;
  }

  /** Adds one streamed `chat.completion.chunk`: its deltas and, if present, its usage. */
  add(chunk: ChatCompletionChunkLike): void {
    for (const { index, delta } of chunk.choices ?? []) {
      if (!delta) continue;
      const choice = this.choice(index ?? 0);
      if (typeof delta.content === 'string') choice.content += delta.content;
      if (typeof delta.refusal === 'string') choice.content += delta.refusal;
      for (const call of delta.tool_calls ?? []) {
        const callIndex = call.index ?? 0;
        const entry = choice.toolCalls.get(callIndex) ?? { name: '', arguments: '' };
        if (typeof call.function?.name === 'string') entry.name += call.function.name;
        if (typeof call.function?.arguments === 'string') entry.arguments += call.function.arguments;
        choice.toolCalls.set(callIndex, entry);
      }
    }
    // A malformed usage object is treated as "not reported" rather than trusted; a valid one
    // replaces any earlier one whole, details included (the final chunk's figures are billed).
    const usage = usageTokenClasses(chunk.usage);
    if (usage) this.usage = usage;
  }

  /** Adds raw completion text to choice 0 (for upstreams that do not speak the chunk format). */
  addText(text: string): void {
    this.choice(0).content += text;
  }

  /** Declares that part of the stream's text was not observed, so counting it would undercharge. */
  markTextUnavailable(): void {
    this.textUnavailable = true;
  }

  /** The accumulated content of one choice (what the conversation should record). */
  contentText(choiceIndex = 0): string {
    return this.choices.get(choiceIndex)?.content ?? '';
  }

  /** Whether a valid upstream usage object has been seen. */
  get hasUpstreamUsage(): boolean {
    return this.usage !== null;
  }

  private countCompletionTokens(): number {
    let tokens = 0;
    for (const choice of this.choices.values()) {
      tokens += countTextTokens(choice.content, this.model);
      for (const call of choice.toolCalls.values()) {
        tokens += countTextTokens(call.name, this.model) + countTextTokens(call.arguments, this.model);
      }
    }
    return tokens;
  }

  /**
   * The usage to bill, by the priority levels of the module comment.
   * @param estimate used only at level 3; typically the admission's reservation figures.
   */
  finalize(estimate: TokenUsage): FinalTokenUsage {
    if (!isSafeCount(estimate.promptTokens)) throw new InvalidBillingQuantityError('estimate.promptTokens', estimate.promptTokens);
    if (!isSafeCount(estimate.completionTokens)) {
      throw new InvalidBillingQuantityError('estimate.completionTokens', estimate.completionTokens);
    }
    if (this.usage !== null) return { ...this.usage, source: TokenSource.upstream };
    if (!this.textUnavailable && this.promptTokens !== null) {
      try {
        return { ...plainTokenClasses({ promptTokens: this.promptTokens, completionTokens: this.countCompletionTokens() }), source: TokenSource.tiktoken };
      } catch {
        // tiktoken failed: fall through to the estimate (level 3).
      }
    }
    return { ...plainTokenClasses(estimate), source: TokenSource.estimate };
  }
}
