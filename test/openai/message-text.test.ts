/**
 * The one rule for "the text of a message" (src/openai/message-text.ts) that
 * token counting and the mock upstream share.
 */
import { contentText, imageRefOf, lastUserMessageText } from '../../src/openai/message-text';

describe('contentText', () => {
  it('takes a string content as it is, and null or absent content as no text', () => {
    expect(contentText('hello\nworld')).toEqual({ text: 'hello\nworld', mediaParts: [] });
    expect(contentText(null)).toEqual({ text: '', mediaParts: [] });
    expect(contentText(undefined)).toEqual({ text: '', mediaParts: [] });
  });

  it('joins text and refusal parts in order by newlines and hands back the other parts', () => {
    const parts = [
      { type: 'text', text: 'first part' },
      { type: 'image_url', image_url: { url: 'data:,' } },
      { type: 'refusal', refusal: 'I cannot' },
      { type: 'input_audio', input_audio: { data: '', format: 'wav' } },
      { type: 'text', text: 'second part' },
    ];
    expect(contentText(parts)).toEqual({ text: 'first part\nI cannot\nsecond part', mediaParts: [parts[1], parts[3]] });
  });

  it('treats a part whose text field is missing or not a string as carrying no text', () => {
    const parts = [{ type: 'text' }, { type: 'text', text: 5 }, { type: 'refusal', text: 'wrong field' }];
    expect(contentText(parts)).toEqual({ text: '', mediaParts: parts });
    expect(contentText([])).toEqual({ text: '', mediaParts: [] });
  });
});

describe('imageRefOf', () => {
  it('reads the url and detail of an image part, also the bare-URL spelling; nothing of other parts', () => {
    expect(imageRefOf({ type: 'image_url', image_url: { url: 'https://x/y.png', detail: 'low' } })).toEqual({ url: 'https://x/y.png', detail: 'low' });
    expect(imageRefOf({ type: 'image_url', image_url: 'https://x/y.png' })).toEqual({ url: 'https://x/y.png' });
    expect(imageRefOf({ type: 'image_url', image_url: { url: 7 } })).toEqual({});
    expect(imageRefOf({ type: 'image_url' })).toEqual({});
    expect(imageRefOf({ type: 'input_audio' })).toBeUndefined();
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
