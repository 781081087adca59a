/** The registry every Ferry process serves: prom-client's process metrics and ferry_build_info, then its own families. */
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Side } from '../phases.js';
import { buildVersions, registerBuildInfo } from './build-info.js';

export async function createAgentRegistry(side: Side, opts: { signal?: AbortSignal } = {}): Promise<Registry> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  registerBuildInfo(registry, side, await buildVersions(opts));
  return registry;
}
