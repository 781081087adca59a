/**
 * The two-host fixture of an e2e file: two netns hosts, a dest agent in the dest one and a scratch dir, made
 * in beforeAll and removed in afterAll, with the tasks' stop functions run first (a task left running would
 * hold the namespaces). Call it inside the file's describe.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import type { DestAgentHandle, DestAgentOptions } from '../../testbed/dest-agent.js';
import type { TwoHosts } from '../../testbed/netns-hosts.js';
import { requireBuilt } from '../../testbed/requirements.js';
import { makeTempDir } from '../../testbed/temp-dirs.js';
import { createTwoHosts, startDestAgent } from '../../testbed/two-hosts.js';

export interface TwoHostFixture {
  readonly hosts: TwoHosts;
  readonly dest: DestAgentHandle;
  readonly dir: string;
  /** Run in afterAll, in order and awaited, before the dest and the hosts go. */
  readonly stops: (() => void | Promise<void>)[];
}

export function twoHostFixture(dirPrefix: string, onReady?: (f: TwoHostFixture) => void, destOptions: DestAgentOptions = {}): TwoHostFixture {
  let hosts: TwoHosts | undefined;
  let dest: DestAgentHandle | undefined;
  let dir: string | undefined;
  const stops: (() => void | Promise<void>)[] = [];
  const ready = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`the two-host fixture has no ${what}: its beforeAll failed or has not run`);
    return v;
  };
  const fixture: TwoHostFixture = {
    get hosts() {
      return ready(hosts, 'hosts');
    },
    get dest() {
      return ready(dest, 'dest agent');
    },
    get dir() {
      return ready(dir, 'dir');
    },
    stops,
  };

  beforeAll(async () => {
    requireBuilt();
    dir = makeTempDir(dirPrefix);
    hosts = await createTwoHosts();
    dest = await startDestAgent(hosts, destOptions);
    onReady?.(fixture);
  }, 60_000);

  afterAll(async () => {
    for (const stop of stops) await stop();
    await dest?.stop();
    await hosts?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return fixture;
}
