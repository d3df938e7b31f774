/**
 * `tsx src/upstream/mock/main.ts`: the standalone mock listens on
 * MOCK_UPSTREAM_PORT, logs its URL and exits cleanly on SIGTERM even with a
 * hung request open.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { userMessage } from '../helpers';

const rootDir = path.resolve(__dirname, '../../..');

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** Resolves with the first JSON log line whose msg is `msg`. */
function logLine(child: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (data: Buffer) => {
      buffered += data.toString('utf8');
      for (const line of buffered.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed.msg === msg) resolve(parsed);
        } catch {
          // a partial line; wait for the rest
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`mock-main exited with ${code} before logging '${msg}'`)));
  });
}

it('serves on MOCK_UPSTREAM_PORT and stops on SIGTERM with a hung request open', async () => {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/upstream/mock/main.ts'], {
    cwd: rootDir,
    env: { ...process.env, MOCK_UPSTREAM_PORT: String(port), API_HOST: '127.0.0.1', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = exitOf(child);
  try {
    const listening = await logLine(child, 'mock upstream listening');
    expect(listening.url).toBe(`http://127.0.0.1:${port}/v1`);
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(await health.json()).toEqual({ status: 'ok' });

    const hung = fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'm', messages: [userMessage('[mock:hang]')] }),
    }).then(
      () => 'answered',
      () => 'dropped',
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await hung).toBe('dropped');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});
