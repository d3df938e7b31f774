/**
 * The mock upstream's answers for embeddings and the Responses API (issue 11), in the shapes
 * OpenAI sends, deterministic so billing tests know the exact usage in advance:
 *
 * - embeddings: one vector per input, a unit vector drawn from a PRNG seeded by the input
 *   itself (the same input always embeds the same), `dimensions` long (default by model:
 *   3072 for a `-large` model, else 1536), as floats or, with `encoding_format: "base64"`
 *   (what the official `openai` client asks for), as little-endian float32 bytes in base64;
 *   usage is the gateway's own count of the input (src/openai/embeddings.ts);
 * - responses: the reply of ./reply.ts (N words are N tokens) as a Response object, or as
 *   its event stream (response.created, response.in_progress, response.output_item.added,
 *   response.content_part.added, response.output_text.delta per token, ...done events,
 *   response.completed, or response.incomplete when `max_output_tokens` cut the reply);
 *   input tokens are the gateway's own estimate formula (src/openai/responses.ts).
 */
import type { ImageSize } from '../../billing/image-dimensions';
import { embeddingInputs, type EmbeddingsRequest } from '../../openai/embeddings';
import { lastUserMessageText } from '../../openai/message-text';
import { countEmbeddingInputTokens } from '../../openai/embeddings';
import { countResponsesInputTokens, responsesPromptMessages, type ResponsesRequest, type ResponsesStreamEvent } from '../../openai/responses';
import { stripMockDirectives, type MockBehaviour } from './behaviour';
import { replyPieces } from './reply';

/** FNV-1a, as ./reply.ts seeds its PRNG. */
function seedOf(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** A deterministic unit vector of `dimensions` float32 values for `input`. */
export function mockEmbeddingVector(input: string | readonly number[], dimensions: number): Float32Array {
  let state = seedOf(typeof input === 'string' ? input : JSON.stringify(input));
  const vector = new Float32Array(dimensions);
  let norm = 0;
  for (let i = 0; i < dimensions; i += 1) {
    state = (state + 0x6d2b79f5) >>> 0; // mulberry32
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const value = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
    vector[i] = value;
    norm += value * value;
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 1;
  for (let i = 0; i < dimensions; i += 1) vector[i] = vector[i]! * scale;
  return vector;
}

/** The embedding size a model answers with when the request names none. */
export function defaultEmbeddingDimensions(model: string): number {
  return /-large\b/.test(model) ? 3072 : 1536;
}

/** The text of an embeddings request that may carry `[mock:...]` directives (its text inputs). */
export function embeddingsDirectiveText(req: EmbeddingsRequest): string {
  return embeddingInputs(req.input).filter((one): one is string => typeof one === 'string').join('\n');
}

/** The embeddings answer (`object: "list"`). */
export function mockEmbeddings(req: EmbeddingsRequest, behaviour: MockBehaviour): Record<string, unknown> {
  const dimensions = req.dimensions ?? defaultEmbeddingDimensions(req.model);
  const data = embeddingInputs(req.input).map((one, index) => {
    const vector = mockEmbeddingVector(one, dimensions);
    const embedding = req.encoding_format === 'base64'
      ? Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64')
      : Array.from(vector);
    return { object: 'embedding', index, embedding };
  });
  const promptTokens = countEmbeddingInputTokens(req.input, req.model);
  return {
    object: 'list',
    data,
    model: req.model,
    ...(behaviour.omitUsage ? {} : { usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } }),
  };
}

/** Everything the mock needs to answer one Responses request, JSON or stream. */
export interface MockResponsesReply {
  id: string;
  messageId: string;
  createdAt: number;
  request: ResponsesRequest;
  pieces: string[];
  /** `incomplete` when max_output_tokens cut the reply. */
  status: 'completed' | 'incomplete';
  usage: Record<string, unknown> | null;
}

/** The text of a Responses request that may carry `[mock:...]` directives: its last user message. */
export function responsesDirectiveText(req: ResponsesRequest): string {
  return lastUserMessageText(responsesPromptMessages(req));
}

/** Plans the reply: min(behaviour.completionTokens, max_output_tokens) tokens. */
export function planMockResponse(req: ResponsesRequest, behaviour: MockBehaviour, sequence: number, imageSizes: ReadonlyMap<string, ImageSize> = new Map()): MockResponsesReply {
  const cap = req.max_output_tokens ?? Number.POSITIVE_INFINITY;
  const outputTokens = Math.min(behaviour.completionTokens, cap);
  const inputTokens = countResponsesInputTokens(req, { imageSize: (url) => imageSizes.get(url) });
  return {
    id: `resp_mock_${sequence}`,
    messageId: `msg_mock_${sequence}`,
    createdAt: Math.floor(Date.now() / 1000),
    request: req,
    pieces: replyPieces(stripMockDirectives(responsesDirectiveText(req)), outputTokens),
    status: outputTokens < behaviour.completionTokens ? 'incomplete' : 'completed',
    usage: behaviour.omitUsage
      ? null
      : {
          input_tokens: inputTokens,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: outputTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: inputTokens + outputTokens,
        },
  };
}

function outputText(reply: MockResponsesReply): Record<string, unknown> {
  return { type: 'output_text', text: reply.pieces.join(''), annotations: [], logprobs: [] };
}

function message(reply: MockResponsesReply, done: boolean): Record<string, unknown> {
  return { id: reply.messageId, type: 'message', status: done ? 'completed' : 'in_progress', role: 'assistant', content: done ? [outputText(reply)] : [] };
}

/** The Response object; `final` false is the in-progress snapshot of response.created. */
export function mockResponseObject(reply: MockResponsesReply, final = true): Record<string, unknown> {
  const { request } = reply;
  return {
    id: reply.id,
    object: 'response',
    created_at: reply.createdAt,
    status: final ? reply.status : 'in_progress',
    background: false,
    error: null,
    incomplete_details: final && reply.status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: request.instructions ?? null,
    max_output_tokens: request.max_output_tokens ?? null,
    model: request.model,
    output: final ? [message(reply, true)] : [],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: true,
    temperature: 1,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: request.tools ?? [],
    top_p: 1,
    truncation: 'disabled',
    usage: final ? reply.usage : null,
    user: null,
    metadata: {},
  };
}

/** The stream's events in order, as OpenAI sends them; the output_text.delta events are the token-by-token part. */
export function mockResponseEvents(reply: MockResponsesReply): ResponsesStreamEvent[] {
  const item = { item_id: reply.messageId, output_index: 0 };
  const text = reply.pieces.join('');
  const events: Array<{ type: string } & Record<string, unknown>> = [
    { type: 'response.created', response: mockResponseObject(reply, false) },
    { type: 'response.in_progress', response: mockResponseObject(reply, false) },
    { type: 'response.output_item.added', output_index: 0, item: message(reply, false) },
    { type: 'response.content_part.added', ...item, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } },
    ...reply.pieces.map((delta) => ({ type: 'response.output_text.delta', ...item, content_index: 0, delta, logprobs: [] })),
    { type: 'response.output_text.done', ...item, content_index: 0, text, logprobs: [] },
    { type: 'response.content_part.done', ...item, content_index: 0, part: outputText(reply) },
    { type: 'response.output_item.done', output_index: 0, item: message(reply, true) },
    { type: reply.status === 'incomplete' ? 'response.incomplete' : 'response.completed', response: mockResponseObject(reply) },
  ];
  return events.map((event, sequence): ResponsesStreamEvent => ({ ...event, sequence_number: sequence }));
}

/** One Responses SSE event as OpenAI writes it: `event:` its type, `data:` its JSON. */
export function formatMockResponseEvent(event: ResponsesStreamEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}
