import net from 'node:net';

/**
 * A loopback TCP proxy in front of a server, so a test can cut a client's connection the way a network failure
 * or a crashed peer would: `dropAll()` destroys both sides of every proxied connection at once, so nothing the
 * client writes afterwards reaches the server. `freezeAll()` cuts them silently instead: nothing is forwarded any
 * more and nothing is closed, so neither side hears from the other or learns that it went (a pulled cable, a
 * firewall dropping packets). New connections keep being accepted (the client may reconnect).
 */
export interface TcpProxy {
  port: number;
  /** How many connections were cut so far. */
  dropped: number;
  dropAll(): void;
  freezeAll(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  /** Frozen pairs: their sockets stay open, and one side closing is not passed on to the other, until close(). */
  const frozen = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      if (frozen.has(pair)) return;
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy: TcpProxy = {
    port: (server.address() as net.AddressInfo).port,
    dropped: 0,
    dropAll() {
      for (const [client, upstream] of pairs) {
        // Unpipe first: bytes already buffered on one side must not be forwarded after the cut.
        client.unpipe(upstream);
        upstream.unpipe(client);
        upstream.destroy();
        client.destroy();
        proxy.dropped++;
      }
      pairs.clear();
    },
    freezeAll() {
      for (const pair of pairs) {
        const [client, upstream] = pair;
        frozen.add(pair);
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
      pairs.clear();
    },
    async close() {
      for (const [client, upstream] of frozen) {
        client.destroy();
        upstream.destroy();
      }
      frozen.clear();
      proxy.dropAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
