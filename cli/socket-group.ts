/** The source agent's --socket-group (or `socket-group` in its config table): a group name or number -> gid. */
import { execFileSync } from 'node:child_process';
import { FerryError } from '../shared/errors/ferry-error.js';

const GROUP_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$/;

/** Whether `group` can name a group at all (a number, or a name NSS could hold); no lookup. */
export function isGroupName(group: string): boolean {
  return /^\d+$/.test(group) || GROUP_NAME.test(group);
}

/** Through NSS (`getent`), so that LDAP or sssd groups work too. `what` names the setting in the error. */
export function groupId(group: string, what = '--socket-group'): number {
  if (/^\d+$/.test(group)) return Number(group);
  const bad = (detail: string): never => {
    throw new FerryError('BAD_ARGUMENT', { message: `${what}: no group named "${group.slice(0, 64)}"`, hint: 'Create it (groupadd ferry) or name an existing group.', detail });
  };
  if (!GROUP_NAME.test(group)) bad('not a group name');
  let line = '';
  try {
    line = execFileSync('getent', ['group', group], { encoding: 'utf8', timeout: 5_000 });
  } catch (e) {
    bad((e as Error).message);
  }
  const gid = line.split(':')[2];
  if (gid === undefined || !/^\d+$/.test(gid)) bad(`getent answered "${line.trim()}"`);
  return Number(gid);
}
