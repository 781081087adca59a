/** The agent log's line for each state a dest session enters (a SessionRegistry subscriber). */
import type { DestSessionState, DestSessionTransition } from './session.js';

const MESSAGE: Readonly<Record<DestSessionState, string>> = {
  receiving: 'session prepared',
  restoring: 'restoring',
  restored: 'restored, stopped',
  filling: 'committed: restored copy resumed, its pager filling pages',
  committed: 'committed: restored copy resumed',
  aborted: 'session aborted',
};

export function logTransition({ session, from, to, fields }: DestSessionTransition): void {
  session.log.info(MESSAGE[to], from === undefined ? { ...fields, dir: session.dir } : { from, ...fields });
}
