/**
 * `ferry migrate --metrics HOST:PORT` and `--pushgateway URL`: a migration run from the CLI (no daemon) serves the
 * source's families while it runs and pushes its final figures at the end. Neither can fail the migration.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import { FerryError, isFerryError } from '../shared/errors/ferry-error.js';
import { buildVersions, registerBuildInfo } from '../shared/metrics/build-info.js';
import { checkMetricsAddress, serveMetrics, type MetricsServer } from '../shared/metrics/metrics-server.js';
import { parsePushgatewayUrl, pushMetrics } from '../shared/metrics/pushgateway.js';
import { PAGE_SIZE } from '../shared/kernel/page-size.js';
import { formatHostPort, parseHostPort, type HostPort } from '../shared/transport/address.js';
import type { EventSink } from '../source-agent/migration/events.js';
import { SourceMetrics } from '../source-agent/source-metrics.js';

export interface MigrateMetricsFlags {
  serveAt: HostPort | undefined;
  pushgateway: URL | undefined;
}

/** Checked with the other flags, before anything is touched. */
export function parseMigrateMetricsFlags(values: { metrics?: string | undefined; pushgateway?: string | undefined }): MigrateMetricsFlags {
  let serveAt: HostPort | undefined;
  if (values.metrics !== undefined) {
    try {
      // Port 0: any free port (printed on stderr), for scripts and tests.
      serveAt = parseHostPort(values.metrics, '--metrics address', { allowPortZero: true });
    } catch (e) {
      if (!isFerryError(e, 'BAD_ADDRESS')) throw e;
      throw new FerryError('BAD_ARGUMENT', { message: `--metrics "${values.metrics}" is not HOST:PORT`, hint: 'Serve /metrics on one address, e.g. --metrics 127.0.0.1:9464', cause: e });
    }
    checkMetricsAddress(serveAt);
  }
  return { serveAt, pushgateway: values.pushgateway === undefined ? undefined : parsePushgatewayUrl(values.pushgateway) };
}

export interface MigrateMetrics {
  /** Subscribe it to the migration. */
  listener: EventSink;
  /** After the migration, whatever its end: push (a failure is a warning), then stop serving. Never throws. */
  finish(): Promise<void>;
}

export async function startMigrateMetrics(flags: MigrateMetricsFlags, maxDowntimeMs: number, warn: (line: string) => void): Promise<MigrateMetrics | undefined> {
  if (!flags.serveAt && !flags.pushgateway) return undefined;
  // The migration's own families (and build_info) are what is pushed; the process metrics are only served.
  const own = new Registry();
  registerBuildInfo(own, 'source', await buildVersions());
  const metrics = new SourceMetrics(own, PAGE_SIZE);
  let server: MetricsServer | undefined;
  if (flags.serveAt) {
    const processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
    const at = formatHostPort(flags.serveAt);
    // Before the migration starts: a port in use is the operator's to change, nothing was touched.
    server = await serveMetrics(Registry.merge([own, processMetrics]), flags.serveAt).catch((e: unknown) => {
      throw new FerryError('BAD_ARGUMENT', { message: `cannot serve /metrics on ${at}: ${e instanceof Error ? e.message : String(e)}`, hint: 'Give --metrics a free port on an address of this host (port 0 picks one).', cause: e });
    });
    warn(`ferry migrate: metrics on http://${formatHostPort({ host: flags.serveAt.host, port: server.port })}/metrics`);
  }
  return {
    listener: metrics.track({ maxDowntimeMs }),
    async finish() {
      if (flags.pushgateway) {
        const failed = await pushMetrics(flags.pushgateway, own);
        if (failed) warn(`ferry migrate: warning: the push of the final metrics failed (the migration's result stands): ${failed}`);
      }
      await server?.close();
    },
  };
}
