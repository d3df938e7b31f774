/**
 * Token counting with tiktoken (M6.2), used for the admission estimate (prompt
 * tokens), as the second priority level of the StreamTokenAccumulator, and for
 * the prompt usage the mock upstream reports.
 *
 * Text passed here is customer data: this module never logs it, and callers
 * must not put it into error messages either.
 */
import { get_encoding, type Tiktoken } from 'tiktoken';
import { contentText, imageRefOf, type ContentPartLike, type MessageContent } from '../openai/message-text';
import { inlineImageSize, type ImageSize } from './image-dimensions';
import { imagePartTokens, WORST_CASE_IMAGE_TOKENS } from './image-tokens';

/** Encodings this gateway knows how to count with. */
export const TokenEncoding = {
  cl100k: 'cl100k_base',
  o200k: 'o200k_base',
} as const;
export type TokenEncoding = (typeof TokenEncoding)[keyof typeof TokenEncoding];

/**
 * Model-name prefixes that use o200k_base. Everything else (gpt-4, gpt-3.5,
 * unknown or self-hosted models) falls back to cl100k_base: a close-enough
 * count beats refusing to estimate, and upstream usage overrides it anyway.
 */
const O200K_PREFIXES = ['gpt-4o', 'chatgpt-4o', 'gpt-4.1', 'gpt-4.5', 'gpt-5', 'o1', 'o3', 'o4'] as const;

/**
 * Tokens charged for a content part that is neither text nor an image (input_audio,
 * file, ...): OpenAI's base cost of one low-detail image (85 tokens), as nothing at
 * admission tells their real cost. The real figure arrives with the upstream usage,
 * which always wins (M6.3). Images are counted by their own rule (./image-tokens.ts).
 */
export const NON_TEXT_PART_TOKENS = 85;

/** How images are counted. */
export interface PromptCountOptions {
  /**
   * Tokens of an image whose size is unknown (an http(s) URL, unreadable inline data):
   * IMAGE_WORST_CASE_TOKENS. @default WORST_CASE_IMAGE_TOKENS (1445), the most the rule charges
   */
  imageWorstCaseTokens?: number;
  /** The size of an image by its URL where the caller knows more than inline data tells (the mock upstream fetches). */
  imageSize?: (url: string) => ImageSize | undefined;
}

/** OpenAI chat format: every message is wrapped in <|start|>{role}<|message|>{content}<|end|>. */
const TOKENS_PER_MESSAGE = 3;
/** A `name` field costs one token on top of its text. */
const TOKENS_PER_NAME = 1;
/** Every reply is primed with <|start|>assistant<|message|>. */
const REPLY_PRIMING_TOKENS = 3;

/** A tool call as found on assistant messages. */
export interface ToolCallForCount {
  function?: { name?: unknown; arguments?: unknown } | null;
}

/** The slice of a chat message that costs prompt tokens. */
export interface ChatMessageForCount {
  role: string;
  content?: MessageContent;
  name?: string | null;
  tool_call_id?: string | null;
  tool_calls?: readonly ToolCallForCount[] | null;
}

/** Thrown when tiktoken cannot encode a text (e.g. the WASM module failed to load). */
export class TokenCountError extends Error {
  override readonly name = 'TokenCountError';
  constructor(encoding: TokenEncoding, cause: unknown) {
    // The text itself is deliberately not part of the message.
    super(`tiktoken failed to count tokens with ${encoding}`, { cause });
  }
}

// One encoder per encoding for the life of the process: building one parses a
// multi-megabyte BPE table, far too slow to do per request.
const encoders = new Map<TokenEncoding, Tiktoken>();

function encoderFor(encoding: TokenEncoding): Tiktoken {
  let encoder = encoders.get(encoding);
  if (encoder === undefined) {
    encoder = get_encoding(encoding);
    encoders.set(encoding, encoder);
  }
  return encoder;
}

/** The tiktoken encoding used to count tokens for `model`. */
export function encodingForModel(model: string): TokenEncoding {
  const name = model.trim().toLowerCase();
  // Strip a provider prefix such as "openai/gpt-4o".
  const bare = name.includes('/') ? name.slice(name.lastIndexOf('/') + 1) : name;
  return O200K_PREFIXES.some((prefix) => bare.startsWith(prefix)) ? TokenEncoding.o200k : TokenEncoding.cl100k;
}

/**
 * Number of tokens in `text` for `model`. Special-token strings such as
 * "<|endoftext|>" typed by a user are counted as ordinary text (they are text
 * to the upstream too), so no input can make counting throw on them.
 */
export function countTextTokens(text: string, model: string): number {
  if (text.length === 0) return 0;
  const encoding = encodingForModel(model);
  try {
    const encoder = encoderFor(encoding);
    let tokens = 0;
    for (const piece of textPieces(text)) tokens += encoder.encode_ordinary(piece).length;
    return tokens;
  } catch (err) {
    throw new TokenCountError(encoding, err);
  }
}

/**
 * Long texts are counted piece by piece: tiktoken's WASM encoder fails on a megabyte-long
 * run without a break (e.g. 2 MB of one letter, which the 32 MiB body limit admits) and its
 * byte-pair merge is quadratic in a run's length. A run of more than MAX_RUN_CHARS
 * non-space characters is cut every MAX_RUN_CHARS (such a run may count a token more per
 * cut than a whole encode: the estimate only reserves); the text around it is cut before
 * a whitespace within PIECE_CHARS windows, where tiktoken's pre-tokenizer splits anyway,
 * so ordinary text counts exactly.
 */
const PIECE_CHARS = 64 * 1024;
const MAX_RUN_CHARS = 256;
const LONG_RUN = new RegExp(`\\S{${MAX_RUN_CHARS + 1},}`, 'g');

function* textPieces(text: string): Generator<string> {
  if (text.length <= MAX_RUN_CHARS) {
    yield text;
    return;
  }
  let at = 0;
  for (const run of text.matchAll(LONG_RUN)) {
    yield* windows(text.slice(at, run.index));
    for (let i = 0; i < run[0].length; i += MAX_RUN_CHARS) {
      let end = Math.min(i + MAX_RUN_CHARS, run[0].length);
      if (end < run[0].length && /[\uD800-\uDBFF]/.test(run[0][end - 1] ?? '')) end -= 1; // never split a surrogate pair
      yield run[0].slice(i, end);
      i = end - MAX_RUN_CHARS;
    }
    at = run.index + run[0].length;
  }
  yield* windows(text.slice(at));
}

/** `text` (no run longer than MAX_RUN_CHARS) in pieces of at most PIECE_CHARS, each cut before a whitespace. */
function* windows(text: string): Generator<string> {
  let start = 0;
  while (text.length - start > PIECE_CHARS) {
    const space = text.slice(start + PIECE_CHARS / 2, start + PIECE_CHARS).search(/\s\S*$/);
    const end = space >= 0 ? start + PIECE_CHARS / 2 + space : start + PIECE_CHARS;
    yield text.slice(start, end);
    start = end;
  }
  if (start < text.length) yield text.slice(start);
}

function mediaPartTokens(part: ContentPartLike, opts: PromptCountOptions): number {
  const image = imageRefOf(part);
  if (!image) return NON_TEXT_PART_TOKENS;
  const size = image.url === undefined ? undefined : (opts.imageSize?.(image.url) ?? inlineImageSize(image.url));
  return imagePartTokens(image.detail, size, opts.imageWorstCaseTokens ?? WORST_CASE_IMAGE_TOKENS);
}

/** The content's text (src/openai/message-text.ts decides what that is) plus the cost of each media part. */
function countContentTokens(content: MessageContent, model: string, opts: PromptCountOptions): number {
  const { text, mediaParts } = contentText(content);
  let tokens = countTextTokens(text, model);
  for (const part of mediaParts) tokens += mediaPartTokens(part, opts);
  return tokens;
}

function countToolCallTokens(toolCalls: ChatMessageForCount['tool_calls'], model: string): number {
  if (!toolCalls) return 0;
  let tokens = 0;
  for (const call of toolCalls) {
    const fn = call.function;
    if (!fn) continue;
    if (typeof fn.name === 'string') tokens += countTextTokens(fn.name, model);
    if (typeof fn.arguments === 'string') tokens += countTextTokens(fn.arguments, model);
  }
  return tokens;
}

/**
 * Prompt tokens of a chat request, by OpenAI's documented formula
 * ("How to count tokens with tiktoken", cookbook): 3 tokens per message, plus
 * the tokens of its role, content and name (+1 when a name is present), plus 3
 * tokens priming the reply. Beyond the cookbook, a parts array counts as the one
 * text it carries (its text and refusal parts joined by newlines), `tool_call_id`
 * and the name and arguments of assistant tool calls are counted as text (an
 * approximation: the upstream's exact tool formatting is not public), an image
 * part counts by OpenAI's tile rule (./image-tokens.ts: its size read from inline
 * data, else the rule's worst case), and other media parts count
 * {@link NON_TEXT_PART_TOKENS} each.
 *
 * This is the only prompt formula in the project: the mock upstream reports its
 * prompt usage with it too.
 */
export function countPromptTokens(messages: readonly ChatMessageForCount[], model: string, opts: PromptCountOptions = {}): number {
  let tokens = REPLY_PRIMING_TOKENS;
  for (const message of messages) {
    tokens += TOKENS_PER_MESSAGE;
    tokens += countTextTokens(message.role, model);
    tokens += countContentTokens(message.content, model, opts);
    if (typeof message.name === 'string') tokens += countTextTokens(message.name, model) + TOKENS_PER_NAME;
    if (typeof message.tool_call_id === 'string') tokens += countTextTokens(message.tool_call_id, model);
    tokens += countToolCallTokens(message.tool_calls, model);
  }
  return tokens;
}

/**
 * Tokens the estimate adds once when a request defines any tool or function: providers wrap
 * the definitions in a block of their own (OpenAI: a `# Tools` / `namespace functions {...}`
 * header and footer, about 20 tokens); 32 covers it with room.
 */
export const TOOLS_BLOCK_TOKENS = 32;
/** Tokens the estimate adds per tool or function on top of its JSON (the provider's per-definition framing). */
export const TOKENS_PER_TOOL = 8;
/** Tokens the estimate adds for a `json_schema` response format on top of its JSON (the provider's framing of the schema). */
export const RESPONSE_FORMAT_BLOCK_TOKENS = 16;

/** The slice of a chat request, beyond its messages, that costs prompt tokens. */
export interface RequestDefinitionsForCount {
  tools?: readonly unknown[] | null;
  functions?: readonly unknown[] | null;
  tool_choice?: unknown;
  response_format?: { type?: unknown; json_schema?: unknown } | null;
}

/**
 * Prompt tokens of what a request defines besides its messages (issue 11): tool and function
 * definitions and a `json_schema` response format, which providers put into the prompt and
 * bill as prompt tokens. Their exact rendering is not public (OpenAI writes functions as a
 * TypeScript namespace, the schema as text), so the estimate counts each definition's compact
 * JSON, which spells out every key, quote and brace the renderings leave out, plus the
 * framing allowances above: an upper bound of what the upstream counts, not its figure. A
 * `tool_choice` that names a function counts its JSON too. docs/pricing.md states the rule.
 */
export function countDefinitionTokens(request: RequestDefinitionsForCount, model: string): number {
  const definitions = [...(request.tools ?? []), ...(request.functions ?? [])];
  let tokens = 0;
  if (definitions.length > 0) {
    tokens += TOOLS_BLOCK_TOKENS;
    for (const definition of definitions) tokens += TOKENS_PER_TOOL + countTextTokens(JSON.stringify(definition), model);
  }
  if (typeof request.tool_choice === 'object' && request.tool_choice !== null) tokens += countTextTokens(JSON.stringify(request.tool_choice), model);
  const format = request.response_format;
  if (format && format.type === 'json_schema' && format.json_schema !== undefined) {
    tokens += RESPONSE_FORMAT_BLOCK_TOKENS + countTextTokens(JSON.stringify(format.json_schema), model);
  }
  return tokens;
}
