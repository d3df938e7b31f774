/**
 * The one rule for "the text of a message" (src/openai/message-text.ts) that
 * token counting and the mock upstream share.
 */
import { contentText, lastUserMessageText } from '../../src/openai/message-text';

describe('contentText', () => {
  it('takes a string content as it is, and null or absent content as no text', () => {
    expect(contentText('hello\nworld')).toEqual({ text: 'hello\nworld', nonTextParts: 0 });
    expect(contentText(null)).toEqual({ text: '', nonTextParts: 0 });
    expect(contentText(undefined)).toEqual({ text: '', nonTextParts: 0 });
  });

  it('joins text and refusal parts in order by newlines and counts the other parts', () => {
    const parts = [
      { type: 'text', text: 'first part' },
      { type: 'image_url', image_url: { url: 'data:,' } },
      { type: 'refusal', refusal: 'I cannot' },
      { type: 'input_audio', input_audio: { data: '', format: 'wav' } },
      { type: 'text', text: 'second part' },
    ];
    expect(contentText(parts)).toEqual({ text: 'first part\nI cannot\nsecond part', nonTextParts: 2 });
  });

  it('treats a part whose text field is missing or not a string as carrying no text', () => {
    expect(contentText([{ type: 'text' }, { type: 'text', text: 5 }, { type: 'refusal', text: 'wrong field' }])).toEqual({
      text: '',
      nonTextParts: 3,
    });
    expect(contentText([])).toEqual({ text: '', nonTextParts: 0 });
  });
});

describe('lastUserMessageText', () => {
  it('reads the last user message only, parts included', () => {
    const messages = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'first question' },
      { role: 'assistant', content: 'answer' },
      { role: 'user', content: [{ type: 'text', text: 'second' }, { type: 'image_url' }, { type: 'text', text: 'question' }] },
      { role: 'tool', content: 'tool output' },
    ];
    expect(lastUserMessageText(messages)).toBe('second\nquestion');
  });

  it('is empty when no user message exists', () => {
    expect(lastUserMessageText([{ role: 'system', content: 'be brief' }])).toBe('');
    expect(lastUserMessageText([])).toBe('');
  });
});
