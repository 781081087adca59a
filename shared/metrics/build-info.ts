/** What this build is: Ferry's version, the CRIU it would run, Node's. For `ferry --version` and ferry_build_info. */
import { Gauge, type Registry } from 'prom-client';
import { criuVersion, locateCriu } from '../criu/criu-binary.js';
import type { Side } from '../phases.js';
import { ferryVersion } from '../repo-root.js';

export interface BuildVersions {
  version: string;
  /** As `criu --version` prints it (e.g. "4.2.1"), or `none` when no criu is usable here. */
  criuVersion: string;
  /** Why there is no criu (undefined when there is one). */
  criuProblem: string | undefined;
  criuPath: string | undefined;
  nodeVersion: string;
}

/** Never throws: a host without CRIU still has a version to print and a build_info to export. */
export async function buildVersions(opts: { signal?: AbortSignal } = {}): Promise<BuildVersions> {
  const base = { version: ferryVersion(), nodeVersion: process.version };
  try {
    const path = await locateCriu(opts);
    return { ...base, criuVersion: (await criuVersion(path, opts)).text, criuProblem: undefined, criuPath: path };
  } catch (e) {
    const reason = e instanceof Error ? ((e as { detail?: string }).detail ?? e.message) : String(e);
    return { ...base, criuVersion: 'none', criuProblem: reason, criuPath: undefined };
  }
}

/** `ferry_build_info{version,criu_version,node_version,side} 1`, one series per agent (docs/metrics.md). */
export function registerBuildInfo(registry: Registry, side: Side, v: Pick<BuildVersions, 'version' | 'criuVersion' | 'nodeVersion'>): void {
  const g = new Gauge({
    name: 'ferry_build_info',
    help: "Ferry's version, the CRIU it runs and Node's (always 1)",
    labelNames: ['version', 'criu_version', 'node_version', 'side'],
    registers: [registry],
  });
  g.set({ version: v.version, criu_version: v.criuVersion, node_version: v.nodeVersion, side }, 1);
}
