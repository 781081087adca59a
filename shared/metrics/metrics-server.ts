/** Serves a prom-client registry at /metrics for Prometheus. */
import { createServer, type Server } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import type { Registry } from 'prom-client';
import { FerryError } from '../errors/ferry-error.js';

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

export interface MetricsListenPolicy {
  /**
   * Allow 0.0.0.0 or [::]: the metrics name the host's migrations, pids and timings, so every interface is
   * only for an operator who says so (a flag the agents wire; unset, one address is required).
   */
  allowWildcard?: boolean | undefined;
}

/** 0.0.0.0, [::] and their spellings (::0, 0:0:0:0:0:0:0:0, ::ffff:0.0.0.0): every interface. */
export function isWildcardHost(host: string): boolean {
  const h = host.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  if (isIPv4(h)) return h.split('.').every((octet) => Number(octet) === 0);
  return isIPv6(h) && /^[0:]+$/.test(h);
}

/** METRICS_WILDCARD_REFUSED for a wildcard address the policy does not allow; the agents call it before they start. */
export function checkMetricsAddress(at: { host: string; port: number }, policy: MetricsListenPolicy = {}): void {
  if (isWildcardHost(at.host) && policy.allowWildcard !== true) {
    throw new FerryError('METRICS_WILDCARD_REFUSED', { detail: `asked to serve /metrics on ${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}` });
  }
}

/** `at` is a HOST:PORT already parsed (shared/transport/address.ts); port 0 picks a free one. */
export async function serveMetrics(registry: Registry, at: { host: string; port: number }, policy: MetricsListenPolicy = {}): Promise<MetricsServer> {
  checkMetricsAddress(at, policy);
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end('not found: try /metrics\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500).end(String(e)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, resolve);
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : at.port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
