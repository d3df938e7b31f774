/**
 * The TCP balancer in front of the Temporal frontends of `npm run cluster`
 * (src/embedded/frontend-balancer.ts): new connections alternate between the backends,
 * a backend that refuses connections is skipped, and with none left the client is closed.
 * Real sockets on loopback; each backend answers with its own name.
 */
import net from 'node:net';
import { startFrontendBalancer, type FrontendBalancer } from '../../src/embedded/frontend-balancer';

interface Backend {
  address: string;
  /** Stops listening and resets every accepted connection, as the kernel does when the process is SIGKILLed. */
  kill(): Promise<void>;
}

function namedServer(name: string): Promise<Backend> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('data', (data) => socket.write(`${name}:${data.toString()}`));
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address() as net.AddressInfo;
      resolve({
        address: `127.0.0.1:${addr.port}`,
        kill: () => new Promise<void>((done) => {
          for (const socket of sockets) socket.destroy();
          server.close(() => done());
        }),
      });
    });
  });
}

/** Sends `ping` through the balancer; resolves with the answer, or 'closed' when the balancer drops the connection. */
function ask(balancer: FrontendBalancer): Promise<string> {
  const [host, port] = balancer.address.split(':');
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port) }, () => socket.write('ping'));
    socket.once('data', (data) => {
      resolve(data.toString());
      socket.destroy();
    });
    socket.once('close', () => resolve('closed'));
    socket.on('error', () => undefined);
  });
}

describe('frontend balancer (issue 13 item 1)', () => {
  it('alternates new connections, skips a dead frontend, and closes the client when none is left', async () => {
    const a = await namedServer('a');
    const b = await namedServer('b');
    const balancer = await startFrontendBalancer({ port: 0, backends: [a.address, b.address] });
    try {
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push(await ask(balancer));
      expect(answers).toEqual(['a:ping', 'b:ping', 'a:ping', 'b:ping']);

      await a.kill(); // frontend a's process is gone: its port refuses connections
      const afterLoss = [];
      for (let i = 0; i < 4; i++) afterLoss.push(await ask(balancer));
      expect(afterLoss).toEqual(['b:ping', 'b:ping', 'b:ping', 'b:ping']);

      await b.kill();
      expect(await ask(balancer)).toBe('closed');
    } finally {
      await balancer.stop();
    }
  });

  it('closes the client side when its frontend dies, so the client reconnects elsewhere', async () => {
    const a = await namedServer('a');
    const balancer = await startFrontendBalancer({ port: 0, backends: [a.address] });
    try {
      const [host, port] = balancer.address.split(':');
      const socket = net.connect({ host, port: Number(port) });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write('ping');
      await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
      socket.on('error', () => undefined);
      await a.kill();
      expect(await closed).toBe(true);
    } finally {
      await balancer.stop();
    }
  });
});
