/**
 * A socket made inside another network namespace and used from here: netlink and packet sockets stay in the
 * namespace they were made in, so this thread (node's main one: every koffi call runs there) enters the
 * namespace for the socket(2) alone and goes straight back. Namespaces are named by an nsfs path
 * (`/proc/PID/ns/net`, `/run/netns/NAME`, `/proc/thread-self/ns/net` for this one's, which needs no setns).
 */
import { closeSync, openSync, statSync } from 'node:fs';
import { setns, socket } from '../native/libc.js';

const CLONE_NEWNET = 0x40000000;
/** This thread's own network namespace. */
export const THIS_NETNS = '/proc/thread-self/ns/net';

/** Whether `netns` names this thread's own network namespace. */
export function isThisNetns(netns: string): boolean {
  return statSync(netns).ino === statSync(THIS_NETNS).ino;
}

/**
 * Runs `fn` (synchronous) with this thread in the network namespace `netns` names, then puts it back. Only for
 * calls that make something bound to the namespace (a socket): nothing may be spawned meanwhile, since a child
 * forked from this thread would start in the other namespace.
 */
export function inNetns<T>(netns: string, fn: () => T): T {
  if (isThisNetns(netns)) return fn();
  const back = openSync(THIS_NETNS, 'r');
  let into: number | undefined;
  try {
    // Opened inside the try: a netns that cannot be opened must not leak `back`.
    into = openSync(netns, 'r');
    setns(into, CLONE_NEWNET);
    try {
      return fn();
    } finally {
      returnTo(back, netns);
    }
  } finally {
    if (into !== undefined) closeSync(into);
    closeSync(back);
  }
}

/**
 * setns back to this thread's namespace. A failure would leave node's main thread in the task's namespace, and
 * callers catch errors (a hold's release goes on after a failed step): no error can carry that, so the process ends.
 */
function returnTo(back: number, from: string): void {
  try {
    setns(back, CLONE_NEWNET);
  } catch (e) {
    process.stderr.write(`ferry: setns back from ${from} failed (${e instanceof Error ? e.message : String(e)}): this thread would stay in that network namespace; aborting\n`);
    process.abort();
  }
}

/** socket(domain, type, protocol) in the network namespace `netns` names; the caller closes it (closeFd). */
export function socketIn(netns: string, domain: number, type: number, protocol: number): number {
  return inNetns(netns, () => socket(domain, type, protocol));
}
