/**
 * The gRPC server of an agent, with its /metrics beside it: bound with the one credentials factory (mutual TLS,
 * with every call authorized before its handler runs), and closed in the order that lets in-flight work finish
 * or roll back (the service first, then the server).
 */
import * as grpc from '@grpc/grpc-js';
import { Counter, type Registry } from 'prom-client';
import { FerryError } from '../errors/ferry-error.js';
import { silentLogger, type Logger } from '../logging/logger.js';
import { serveMetrics, type MetricsServer } from '../metrics/metrics-server.js';
import type { Side } from '../phases.js';
import { formatHostPort, type HostPort } from './address.js';
import { serverCredentials } from './credentials.js';
import { checkListenPolicy } from './listen-policy.js';
import { tolerantService, undecodableMessageInterceptor } from './undecodable-messages.js';
import { peerAuthorizationInterceptor, type AuthorizePeer, type PeerRefusal } from './peer-authorization.js';
import { SERVER_OPTIONS } from './proto.js';
import { INSECURE_LOOPBACK, type TransportSecurity } from './transport-security.js';

export interface AgentServer {
  address: string;
  port: number;
  metricsPort: number | undefined;
  close(): Promise<void>;
}

export interface AgentServerOptions {
  service: grpc.ServiceDefinition;
  handlers: grpc.UntypedServiceImplementation;
  listen: HostPort;
  registry: Registry;
  metrics?: HostPort | undefined;
  /** Rolls back what the service has in flight; runs before the server stops. */
  closeService: () => Promise<void>;
  /**
   * Mutual TLS (callers checked against `security.allowList`), or plaintext. Absent: plaintext on loopback only
   * (tests of a service's logic).
   */
  security?: TransportSecurity | undefined;
  /** The agent's own rule for a verified caller, after the allow-list (TLS only). */
  authorizePeer?: AuthorizePeer | undefined;
  /** This agent's side, named in its refusals; required with TLS. */
  side?: Side | undefined;
  log?: Logger | undefined;
}

/** Refused calls logged per window at most (a hostile peer can call in a loop); all of them are counted. */
const REFUSAL_LOG_WINDOW_MS = 10_000;
const REFUSAL_LOGS_PER_WINDOW = 20;

function refusalRecorder(registry: Registry, side: Side, log: Logger): (r: PeerRefusal) => void {
  const counter = new Counter({
    // One prefix per component (docs/metrics.md).
    name: `ferry_${side}_peer_refusals_total`,
    help: 'Calls refused before any handler ran: caller not authenticated, not allowed, or without a usable identity',
    labelNames: ['code'],
    registers: [registry],
  });
  let windowStart = 0;
  let logged = 0;
  let suppressed = 0;
  return (r) => {
    counter.inc({ code: r.error.code });
    const now = Date.now();
    if (now - windowStart >= REFUSAL_LOG_WINDOW_MS) {
      if (suppressed > 0) log.warn('more calls refused, not logged one by one', { count: suppressed });
      windowStart = now;
      logged = 0;
      suppressed = 0;
    }
    if (logged >= REFUSAL_LOGS_PER_WINDOW) {
      suppressed++;
      return;
    }
    logged++;
    log.warn('call refused', { code: r.error.code, method: r.method, peer: r.address, identity: r.identity, reason: r.error.message, detail: r.error.detail });
  };
}

export async function startAgentServer(o: AgentServerOptions): Promise<AgentServer> {
  checkListenPolicy(o.listen, o.security);
  const security = o.security ?? INSECURE_LOOPBACK;
  const log = o.log ?? silentLogger;
  if (security.kind === 'tls' && !o.side) throw new FerryError('INTERNAL', { detail: 'a TLS agent server needs its side' });
  // Who may call first (on the metadata), then what it sent (each message).
  const interceptors = [
    ...(security.kind === 'tls'
      ? [peerAuthorizationInterceptor({ allowList: security.allowList, side: o.side!, authorize: o.authorizePeer, onRefused: refusalRecorder(o.registry, o.side!, log) })]
      : []),
    undecodableMessageInterceptor(o.side ?? 'dest'),
  ];
  const server = new grpc.Server(SERVER_OPTIONS);
  server.addService(tolerantService(o.service), o.handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatHostPort(o.listen), serverCredentials(security, interceptors, log), (e, p) => (e ? reject(e) : resolve(p))),
  );
  let metrics: MetricsServer | undefined;
  try {
    if (o.metrics) metrics = await serveMetrics(o.registry, o.metrics);
  } catch (e) {
    server.forceShutdown();
    throw e;
  }
  return {
    address: formatHostPort({ host: o.listen.host, port }),
    port,
    metricsPort: metrics?.port,
    close: async () => {
      await o.closeService();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await metrics?.close();
    },
  };
}
