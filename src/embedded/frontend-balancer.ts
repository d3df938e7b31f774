/**
 * A TCP load balancer in front of the Temporal frontends of `npm run cluster`: what a
 * production deployment puts there (an L4 balancer or a Kubernetes Service), so the
 * API and the workers hold one address and survive the loss of a server process.
 *
 * Each new connection goes to the next frontend in turn; a frontend that refuses the
 * connection (its process is gone) is skipped for that connection. gRPC multiplexes
 * every call on a few long-lived connections, so when a server process dies its
 * connections close, the SDK reconnects, and the reconnection lands on a survivor.
 */
import net from 'node:net';

export interface FrontendBalancer {
  /** host:port the clients use. */
  address: string;
  stop(): Promise<void>;
}

export interface FrontendBalancerOptions {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** The frontends' host:port. */
  backends: string[];
  host?: string;
}

function splitAddress(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(':');
  return { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
}

/** Connects to the first backend from `start` on that accepts, or fails with the last error. */
function connectToAny(backends: string[], start: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const attempt = (tried: number): void => {
      const target = splitAddress(backends[(start + tried) % backends.length]!);
      const socket = net.connect(target);
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err) => {
        socket.destroy();
        if (tried + 1 < backends.length) attempt(tried + 1);
        else reject(err);
      });
    };
    attempt(0);
  });
}

export function startFrontendBalancer(opts: FrontendBalancerOptions): Promise<FrontendBalancer> {
  const host = opts.host ?? '127.0.0.1';
  const open = new Set<net.Socket>();
  let next = 0;
  const server = net.createServer((client) => {
    open.add(client);
    client.once('close', () => open.delete(client));
    client.on('error', () => client.destroy());
    client.pause(); // hold the client's first bytes until the backend is connected
    connectToAny(opts.backends, next++).then((backend) => {
      if (client.destroyed) {
        backend.destroy();
        return;
      }
      open.add(backend);
      backend.once('close', () => {
        open.delete(backend);
        client.destroy();
      });
      backend.on('error', () => backend.destroy());
      client.once('close', () => backend.destroy());
      client.pipe(backend);
      backend.pipe(client);
      client.resume();
    }, () => client.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : opts.port;
      resolve({
        address: `${host}:${port}`,
        stop: () => new Promise<void>((done) => {
          for (const socket of open) socket.destroy();
          server.close(() => done());
        }),
      });
    });
  });
}
