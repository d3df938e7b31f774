/**
 * OpenAI's Responses API (`POST /v1/responses`) as the gateway and the mock upstream read
 * it: the request schema, the prompt estimate, and the text and usage a response (JSON) or
 * its event stream (SSE) carries for billing.
 *
 * - Only what billing depends on is validated: `input` (a string, or items: messages whose
 *   content is a string or parts such as input_text / input_image, and other items such
 *   as function_call outputs), `instructions`, `max_output_tokens`, `stream`, `tools`;
 *   everything else passes through to the upstream as sent.
 * - `background: true` is refused: the answer would be fetched later, elsewhere, and the
 *   gateway could never bill what it never sees.
 * - The estimate reuses the chat formula (src/billing/token-count.ts) on the input read as
 *   chat messages ({@link responsesPromptMessages}), so images count by the same tile rule
 *   and the mock reports the same figure. Input the gateway cannot see (a
 *   `previous_response_id`'s conversation, stored prompts, file contents) is not in the
 *   estimate: the upstream's usage bills it, and a cost above the reservation is recorded
 *   as overage (docs/endpoints.md).
 */
import { z } from 'zod';
import type { ChatCompletionChunkLike } from '../billing/stream-token-accumulator';
import { countPromptTokens, type ChatMessageForCount, type PromptCountOptions } from '../billing/token-count';
import { positiveSafeInt } from '../safe-int';
import type { ContentPartLike } from './message-text';
import { responsesUsageAsChatUsage } from './responses-usage';

/** Roles a Responses message item may have. */
const responsesRoleSchema = z.enum(['user', 'assistant', 'system', 'developer']);

/** A content part: the text parts need their text; images, files and audio pass through. */
const contentPartSchema = z
  .object({ type: z.string().min(1), text: z.unknown().optional() })
  .passthrough()
  .superRefine((part, ctx) => {
    if ((part.type === 'input_text' || part.type === 'output_text') && typeof part.text !== 'string') {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['text'], message: `an ${part.type} part needs a string text` });
    }
  });

const messageItemSchema = z
  .object({
    type: z.literal('message').optional(),
    role: responsesRoleSchema,
    content: z.union([z.string(), z.array(contentPartSchema).min(1)]),
  })
  .passthrough();

/** An input item: a message (with or without `type: "message"`), or another typed item (function_call_output, ...). */
const inputItemSchema = z
  .object({ type: z.string().min(1).optional() })
  .passthrough()
  .superRefine((item, ctx) => {
    if (item.type !== undefined && item.type !== 'message') return;
    const parsed = messageItemSchema.safeParse(item);
    if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue(issue);
  });

/** `POST /v1/responses`. */
export const responsesRequestSchema = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string().min(1, 'input must not be an empty string'), z.array(inputItemSchema).min(1, 'input must not be an empty array')]),
    instructions: z.string().nullable().optional(),
    max_output_tokens: positiveSafeInt.nullable().optional(),
    stream: z.boolean().optional(),
    tools: z.array(z.object({ type: z.string().min(1) }).passthrough()).optional(),
    background: z.literal(false, { errorMap: () => ({ message: 'background responses are not supported: the gateway bills what it relays' }) }).nullable().optional(),
  })
  .passthrough();
export type ResponsesRequest = z.infer<typeof responsesRequestSchema>;

/** The parts of a Responses message as the chat formula reads them (text, refusal, image_url, other media). */
function chatPart(part: Record<string, unknown>): ContentPartLike {
  const type = typeof part.type === 'string' ? part.type : '';
  if (type === 'input_text' || type === 'output_text') return { type: 'text', text: part.text };
  if (type === 'refusal') return { type: 'refusal', refusal: part.refusal };
  if (type === 'input_image') {
    // An image by file_id has no URL: counted at the rule's worst case, like an unknown size.
    const url = typeof part.image_url === 'string' ? part.image_url : undefined;
    return { type: 'image_url', image_url: { ...(url !== undefined ? { url } : {}), ...(part.detail !== undefined ? { detail: part.detail } : {}) } };
  }
  return { type };
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value ?? '');
}

/**
 * The request's prompt as chat messages, for the estimate and the mock's usage: the
 * instructions as a system message, a string input as one user message, message items as
 * messages (their parts mapped to the chat parts that count the same), function calls and
 * their outputs as the assistant tool calls and tool messages they are in chat, any other
 * item as its JSON text (an over-count: the reservation must cover it), and the tool
 * definitions as one more system message of their JSON.
 */
export function responsesPromptMessages(req: Pick<ResponsesRequest, 'input' | 'instructions' | 'tools'>): ChatMessageForCount[] {
  const messages: ChatMessageForCount[] = [];
  if (typeof req.instructions === 'string' && req.instructions !== '') messages.push({ role: 'system', content: req.instructions });
  if (req.tools && req.tools.length > 0) messages.push({ role: 'system', content: JSON.stringify(req.tools) });
  if (typeof req.input === 'string') {
    messages.push({ role: 'user', content: req.input });
    return messages;
  }
  for (const item of req.input as Array<Record<string, unknown>>) {
    const type = item.type ?? 'message';
    if (type === 'message') {
      const content = item.content;
      messages.push({
        role: String(item.role),
        content: typeof content === 'string' ? content : (content as Array<Record<string, unknown>>).map(chatPart),
      });
    } else if (type === 'function_call') {
      messages.push({ role: 'assistant', content: null, tool_calls: [{ function: { name: item.name, arguments: item.arguments } }] });
    } else if (type === 'function_call_output') {
      messages.push({ role: 'tool', content: text(item.output), ...(typeof item.call_id === 'string' ? { tool_call_id: item.call_id } : {}) });
    } else {
      messages.push({ role: 'assistant', content: JSON.stringify(item) });
    }
  }
  return messages;
}

/** Prompt tokens of a Responses request (the estimate's input side; the mock reports the same). */
export function countResponsesInputTokens(req: Pick<ResponsesRequest, 'input' | 'instructions' | 'tools' | 'model'>, opts: PromptCountOptions = {}): number {
  return countPromptTokens(responsesPromptMessages(req), req.model, opts);
}

/** The events that end a Responses stream: each carries the final `response`, with its usage. */
export const RESPONSES_TERMINAL_EVENTS: ReadonlySet<string> = new Set(['response.completed', 'response.incomplete', 'response.failed']);

/** One event of a Responses stream, as parsed from its `data:` (its `type` names the event). */
export interface ResponsesStreamEvent {
  type: string;
  [field: string]: unknown;
}

/** The output text a Responses object carries, piece by piece (what the tiktoken level counts when no usage came). */
export function responseOutputTexts(response: unknown): string[] {
  const output = (response as { output?: unknown } | null)?.output;
  if (!Array.isArray(output)) return [];
  const texts: string[] = [];
  for (const item of output as Array<Record<string, unknown>>) {
    if (item.type === 'message' && Array.isArray(item.content)) {
      for (const part of item.content as Array<Record<string, unknown>>) {
        if (typeof part.text === 'string') texts.push(part.text);
        if (typeof part.refusal === 'string') texts.push(part.refusal);
      }
    } else if (item.type === 'function_call') {
      for (const piece of [item.name, item.arguments]) if (typeof piece === 'string') texts.push(piece);
    } else if (item.type === 'reasoning' && Array.isArray(item.summary)) {
      for (const part of item.summary as Array<Record<string, unknown>>) if (typeof part.text === 'string') texts.push(part.text);
    }
  }
  return texts;
}

/** A Responses object's usage in the chat shape, or undefined (see ./responses-usage.ts). */
export function responseUsage(response: unknown): ReturnType<typeof responsesUsageAsChatUsage> {
  return responsesUsageAsChatUsage((response as { usage?: unknown } | null)?.usage);
}

/**
 * A stream event as the chat chunk the StreamTokenAccumulator reads: delivered text deltas
 * (output text, refusals, reasoning summaries, function-call names and arguments) as
 * deltas, a terminal event's usage as the usage. Undefined for events that carry neither.
 */
export function responsesEventAsChunk(event: ResponsesStreamEvent): ChatCompletionChunkLike | undefined {
  const delta = typeof event.delta === 'string' ? event.delta : undefined;
  const outputIndex = typeof event.output_index === 'number' ? event.output_index : 0;
  switch (event.type) {
    case 'response.output_text.delta':
    case 'response.reasoning_summary_text.delta':
    case 'response.reasoning_text.delta':
      return delta === undefined ? undefined : { choices: [{ index: 0, delta: { content: delta } }] };
    case 'response.refusal.delta':
      return delta === undefined ? undefined : { choices: [{ index: 0, delta: { refusal: delta } }] };
    case 'response.function_call_arguments.delta':
      return delta === undefined ? undefined : { choices: [{ index: 0, delta: { tool_calls: [{ index: outputIndex, function: { arguments: delta } }] } }] };
    case 'response.output_item.added': {
      const item = event.item as { type?: unknown; name?: unknown } | undefined;
      if (item?.type !== 'function_call' || typeof item.name !== 'string') return undefined;
      return { choices: [{ index: 0, delta: { tool_calls: [{ index: outputIndex, function: { name: item.name } }] } }] };
    }
    default: {
      if (!RESPONSES_TERMINAL_EVENTS.has(event.type)) return undefined;
      const usage = responseUsage(event.response);
      return usage ? { choices: [], usage } : undefined;
    }
  }
}
