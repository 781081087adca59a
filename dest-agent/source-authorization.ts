/**
 * The dest's rule for who may migrate into it: the verified source identity must be on the dest's allow-list
 * (`--allow-peer`, checked by the agent server for every call before this), and each session opened is written
 * to the log with the identity that opened it, so that every (source -> this dest) pair is on record.
 */
import type { Logger } from '../shared/logging/logger.js';
import type { AuthorizePeer } from '../shared/transport/peer-authorization.js';
import { clip, describeIdentity } from '../shared/transport/peer-identity.js';

const PREPARE = '/ferry.v1.Dest/Prepare';

export function authorizeSource(log: Logger): AuthorizePeer {
  return (peer, method) => {
    if (method === PREPARE) log.info('session requested by a verified source', { source: clip(describeIdentity(peer)) });
    return undefined;
  };
}
