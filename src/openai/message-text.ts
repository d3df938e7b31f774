/**
 * The one rule for "the text of a message". Token counting (admission estimate,
 * the StreamTokenAccumulator's prompt, the mock's reported usage) and the mock's
 * directives and reply seed all read message content through here, so they can
 * never disagree on what text a prompt carries:
 *
 * - a string content is its own text;
 * - in a parts array, a `text` part contributes its `text` and a `refusal` part
 *   (an earlier assistant turn replayed) its `refusal`, joined in order by
 *   newlines, which is how OpenAI-compatible servers such as vLLM hand
 *   multi-part text to the model;
 * - every other part (image_url, input_audio, file, ...) contributes no text and
 *   is handed back as media, because its token cost is not a function of any text
 *   (src/billing/token-count.ts prices images by their size).
 *
 * The types are structural so that both a parsed request and a loosely typed
 * message (a stored body, a test literal) can be read.
 */
import { MessageRole } from './chat-request';

/** The slice of a content part that decides what text it carries. */
export interface ContentPartLike {
  readonly type: string;
  readonly text?: unknown;
  readonly refusal?: unknown;
  /** `{ url, detail? }` on an image part. */
  readonly image_url?: unknown;
}

/** A message's `content` as it may appear on the wire. */
export type MessageContent = string | readonly ContentPartLike[] | null | undefined;

/** What one message's content carries. */
export interface ContentText {
  /** The text, by the rule of this module's header ('' for null or absent content). */
  text: string;
  /** The parts that carry no text (images, audio, files), in order. */
  mediaParts: readonly ContentPartLike[];
}

/** The text a part carries, or undefined when it is not a text-bearing part. */
function partText(part: ContentPartLike): string | undefined {
  if (part.type === 'text' && typeof part.text === 'string') return part.text;
  if (part.type === 'refusal' && typeof part.refusal === 'string') return part.refusal;
  return undefined;
}

/** What an image part points at. */
export interface ImageRef {
  /** The image's URL (http(s) or a `data:` URL), when it is a string. */
  url?: string;
  /** `low`, `high` or `auto` as the client sent it (unchecked). */
  detail?: unknown;
}

/** The image of an `image_url` part (`{ url, detail }`, or the older bare URL string), or undefined for any other part. */
export function imageRefOf(part: ContentPartLike): ImageRef | undefined {
  if (part.type !== 'image_url') return undefined;
  const ref = part.image_url;
  if (typeof ref === 'string') return { url: ref };
  if (typeof ref !== 'object' || ref === null) return {};
  const { url, detail } = ref as Record<string, unknown>;
  return { ...(typeof url === 'string' ? { url } : {}), ...(detail !== undefined ? { detail } : {}) };
}

/** The text of one message's content and the parts of it that carry none. */
export function contentText(content: MessageContent): ContentText {
  if (content === undefined || content === null) return { text: '', mediaParts: [] };
  if (typeof content === 'string') return { text: content, mediaParts: [] };
  const texts: string[] = [];
  const mediaParts: ContentPartLike[] = [];
  for (const part of content) {
    const text = partText(part);
    if (text === undefined) mediaParts.push(part);
    else texts.push(text);
  }
  return { text: texts.join('\n'), mediaParts };
}

/** The text of the last `user` message, or '' when there is none. */
export function lastUserMessageText(messages: readonly { role: string; content?: MessageContent }[]): string {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const message = messages[i];
    if (message?.role === MessageRole.user) return contentText(message.content).text;
  }
  return '';
}
