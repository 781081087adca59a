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
  const into = openSync(netns, 'r');
  try {
    setns(into, CLONE_NEWNET);
    try {
      return fn();
    } finally {
      // Failing here would leave this thread (node's main one) in the other namespace: nothing may swallow it.
      setns(back, CLONE_NEWNET);
    }
  } finally {
    closeSync(into);
    closeSync(back);
  }
}

/** socket(domain, type, protocol) in the network namespace `netns` names; the caller closes it (closeFd). */
export function socketIn(netns: string, domain: number, type: number, protocol: number): number {
  return inNetns(netns, () => socket(domain, type, protocol));
}
