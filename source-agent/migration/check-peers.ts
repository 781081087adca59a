/** negotiate (remote half): can these two hosts migrate to each other? Pure, so it is tested on tables. */
import { FerryError } from '../../shared/errors/ferry-error.js';
import type { NegotiateResponse, PeerInfo } from '../../shared/transport/messages.js';

/** Returns the protocol version to speak, or throws the reason the dest cannot take the task. */
export function checkPeers(source: PeerInfo, answer: NegotiateResponse): number {
  const dest = answer.dest;
  const fail = (key: 'PROTOCOL_MISMATCH' | 'DEST_NO_CRIU' | 'PLATFORM_MISMATCH', detail: string): never => {
    throw new FerryError(key, { phase: 'negotiate', side: 'dest', sourceState: 'running', detail });
  };
  if (answer.protocolVersion === 0 || !source.protocolVersions.includes(answer.protocolVersion)) {
    fail('PROTOCOL_MISMATCH', `source speaks ${source.protocolVersions.join(',')}, dest speaks ${dest.protocolVersions.join(',')}`);
  }
  if (!dest.criuVersion) fail('DEST_NO_CRIU', `dest ${dest.hostname}: ${dest.criuProblem || 'criu not found'}`);
  if (dest.arch !== source.arch) fail('PLATFORM_MISMATCH', `source is ${source.arch}, dest is ${dest.arch}`);
  if (dest.pageSize !== source.pageSize) fail('PLATFORM_MISMATCH', `page size ${source.pageSize} on the source, ${dest.pageSize} on the dest`);
  return answer.protocolVersion;
}
