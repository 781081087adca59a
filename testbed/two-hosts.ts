/**
 * The two-host harness for end-to-end tests, the soak and the benchmark, in one import: two network-namespace
 * hosts and their link (netns-hosts.ts), the compiled `ferry` run in them (ferry-process.ts, ferry-migrate.ts),
 * the three-host L2 segment for tasks with their own network (l2-segment.ts), the agents as restartable daemons
 * (dest-agent.ts, source-agent-daemon.ts), and what a test checks for afterwards (leftovers.ts,
 * process-probes.ts, metrics-scrape.ts). Each concept lives in its own file; this one only gathers them.
 */
export { createTwoHosts, type Host, type HostPair, type TwoHosts } from './netns-hosts.js';
export { makeTempDir } from './temp-dirs.js';
export {
  REPO_ROOT,
  describeResult,
  errorCodeIn,
  runFerry,
  startFerry,
  tail,
  type FerryLine,
  type FerryResult,
  type FerryRun,
  type FerryRunOptions,
} from './ferry-process.js';
export { runMigrate, runMigrateVia, startMigrate, startMigrateVia, type MigrateOptions, type MigrateViaOptions } from './ferry-migrate.js';
export { startDestAgent, type DestAgentHandle, type DestAgentOptions } from './dest-agent.js';
export { startSourceAgentDaemon, type SourceAgentDaemonHandle, type SourceAgentDaemonOptions } from './source-agent-daemon.js';
export { leftovers, nsInode, pidsWithArgs } from './leftovers.js';
export { httpGetIn, metricValue } from './metrics-scrape.js';
export { eventually } from './wait-for.js';
export { hasCriu, requireBuilt } from './requirements.js';
export { createL2Segment, liveSegmentNamespaces, TASK_BRIDGE, type L2Segment, type Station } from './l2-segment.js';
export { tcpAnswers } from './netns-names.js';
