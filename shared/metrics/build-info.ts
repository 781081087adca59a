/**
 * What this build is and runs on: Ferry's version, the CRIU it would run, Node's (and whether package.json's
 * engines allow it), the kernel. One source for `ferry --version`, `ferry check` and ferry_build_info.
 */
import { arch, release } from 'node:os';
import { Gauge, type Registry } from 'prom-client';
import { criuVersion, locateCriu } from '../criu/criu-binary.js';
import { satisfiesEngines } from '../node-engines.js';
import type { Side } from '../phases.js';
import { ferryVersion, nodeEngineRange } from '../repo-root.js';

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

export interface RuntimeReport extends BuildVersions {
  /** package.json's engines.node, and whether nodeVersion is in it (undefined: the range is not one Ferry reads). */
  nodeEngines: string;
  nodeSupported: boolean | undefined;
  /** uname -r and the machine, as `ferry check` shows a peer's. */
  kernel: string;
  arch: string;
}

/** buildVersions and the rest of what runs here. Never throws either. */
export async function runtimeReport(opts: { signal?: AbortSignal } = {}): Promise<RuntimeReport> {
  const v = await buildVersions(opts);
  const nodeEngines = nodeEngineRange();
  return { ...v, nodeEngines, nodeSupported: satisfiesEngines(v.nodeVersion, nodeEngines), kernel: release(), arch: arch() };
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
