/**
 * Serves the image fixtures (test/fixtures/images) over HTTP, as an image host a request's
 * `image_url` may point at: the mock upstream fetches them like a provider does.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export const IMAGE_FIXTURES_DIR = path.join(__dirname, '..', 'fixtures', 'images');

export interface ImageServer {
  /** The URL of a fixture by its file name. */
  url(name: string): string;
  /** Requests served, by path. */
  hits: Map<string, number>;
  close(): Promise<void>;
}

export async function startImageServer(): Promise<ImageServer> {
  const hits = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const name = path.basename(req.url ?? '');
    hits.set(name, (hits.get(name) ?? 0) + 1);
    const file = path.join(IMAGE_FIXTURES_DIR, name);
    if (!fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}`,
    hits,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
