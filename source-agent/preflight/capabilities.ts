/**
 * Capabilities CRIU's dump needs of this process. CRIU seizes the tree with ptrace (CAP_SYS_PTRACE) and reads
 * and sets what only an admin may (CAP_SYS_ADMIN, or CAP_CHECKPOINT_RESTORE since Linux 5.9). And it reads each
 * task's rlimits with prlimit64(pid, res, NULL, &old) (criu/cr-dump.c, dump_task_rlimits: "Can't get rlimit
 * %d"), which the kernel allows (check_prlimit_permission) only when this process's real uid and gid equal the
 * task's real, effective and saved ones, or with CAP_SYS_RESOURCE: a task of another uid, or one that setuid'd,
 * needs it (ZDTM pid00, mlock_setuid on a root that lacks it).
 */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

const CAP_SYS_PTRACE = 19;
const CAP_SYS_ADMIN = 21;
const CAP_SYS_RESOURCE = 24;
const CAP_CHECKPOINT_RESTORE = 40;

const has = (caps: bigint, cap: number): boolean => ((caps >> BigInt(cap)) & 1n) === 1n;

export const capabilitiesCheck: PreflightCheck = {
  name: 'capabilities',
  key: 'PREFLIGHT_CAPABILITIES',
  overridable: false,
  run({ agent, tree }) {
    const missing: string[] = [];
    if (!has(agent.capEff, CAP_SYS_PTRACE)) missing.push('CAP_SYS_PTRACE');
    if (!has(agent.capEff, CAP_SYS_ADMIN) && !has(agent.capEff, CAP_CHECKPOINT_RESTORE)) missing.push('CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE)');
    if (missing.length > 0) return refuse(`this process lacks ${missing.join(', ')} (CapEff ${agent.capEff.toString(16)})`);
    if (has(agent.capEff, CAP_SYS_RESOURCE)) return ok('CRIU\'s capabilities are there');
    const foreign = tree.tasks.filter((t) => {
      const [ru, eu, su] = t.uids;
      const [rg, eg, sg] = t.gids;
      return ![ru, eu, su].every((u) => u === agent.uid) || ![rg, eg, sg].every((g) => g === agent.gid);
    });
    if (foreign.length === 0) return ok('CRIU\'s capabilities are there (no CAP_SYS_RESOURCE, but every task has this process\'s uid and gid)');
    const who = foreign.map((t) => `pid ${t.pid} (${t.name}) uid ${t.uids.slice(0, 3).join('/')} gid ${t.gids.slice(0, 3).join('/')}`);
    return refuse(`this process lacks CAP_SYS_RESOURCE and ${foreign.length} task(s) have other ids than its uid ${agent.uid} gid ${agent.gid}: CRIU cannot read their rlimits ("Can't get rlimit 0"): ${some(who)}`);
  },
};
