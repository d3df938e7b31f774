/**
 * The mock upstream sees images as a provider does: it fetches the http(s) image URLs of a
 * request and reads their size from the header (src/billing/image-dimensions.ts), so the
 * prompt usage it reports counts each image by its real size, as OpenAI bills it, while the
 * gateway, which never fetches customer URLs, reserves the rule's worst case for them.
 * Inline base64 images are measured by the shared token count itself.
 *
 * Only the first MAX_HEADER_BYTES of a response are read (a header is at the start); an
 * image that cannot be fetched in FETCH_TIMEOUT_MS, or read, has no size here and is
 * counted at the rule's worst case, as the gateway counts it. The mock is a test and
 * development double: it fetches whatever URL a request names, so it must never face the internet.
 */
import { bufferSource, imageSizeOf, type ImageSize } from '../../billing/image-dimensions';
import type { ChatCompletionRequest } from '../../openai/chat-request';
import { contentText, imageRefOf } from '../../openai/message-text';

const FETCH_TIMEOUT_MS = 2000;
const MAX_HEADER_BYTES = 256 * 1024;

function remoteImageUrls(request: ChatCompletionRequest): Set<string> {
  const urls = new Set<string>();
  for (const message of request.messages) {
    for (const part of contentText(message.content).mediaParts) {
      const url = imageRefOf(part)?.url;
      if (url !== undefined && /^https?:\/\//i.test(url)) urls.add(url);
    }
  }
  return urls;
}

async function fetchedSize(url: string): Promise<ImageSize | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (!res.ok || !res.body) return undefined;
    const chunks: Buffer[] = [];
    let length = 0;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    try {
      while (length < MAX_HEADER_BYTES) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(Buffer.from(value));
        length += value.length;
        const size = imageSizeOf(bufferSource(Buffer.concat(chunks)));
        if (size) return size;
      }
    } finally {
      await reader.cancel().catch(() => undefined);
    }
    return imageSizeOf(bufferSource(Buffer.concat(chunks)));
  } catch {
    return undefined;
  }
}

/** The sizes of the request's http(s) images that could be fetched and read, by URL. */
export async function fetchImageSizes(request: ChatCompletionRequest): Promise<Map<string, ImageSize>> {
  const sizes = new Map<string, ImageSize>();
  await Promise.all([...remoteImageUrls(request)].map(async (url) => {
    const size = await fetchedSize(url);
    if (size) sizes.set(url, size);
  }));
  return sizes;
}
