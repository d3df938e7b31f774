/**
 * Reading the text out of chat messages. Token estimates (admission) and the
 * mock's prompt counting must agree on what "the text of a message" is, so the
 * rule lives in one place: a string content as is, else its `text` parts joined
 * by newlines; image/audio parts contribute no text.
 */
import { MessageRole, type ChatMessage } from '../upstream/types';

/** The countable text of one message's content. */
export function contentText(content: ChatMessage['content']): string {
  if (content === undefined || content === null) return '';
  if (typeof content === 'string') return content;
  const texts: string[] = [];
  for (const part of content) {
    if (part.type === 'text' && typeof part.text === 'string') texts.push(part.text);
  }
  return texts.join('\n');
}

/** The text of the last `user` message, or '' when there is none. */
export function lastUserMessageText(messages: readonly ChatMessage[]): string {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const message = messages[i];
    if (message?.role === MessageRole.User) return contentText(message.content);
  }
  return '';
}
