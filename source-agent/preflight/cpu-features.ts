/**
 * CPU features: a task probed its CPU once (glibc's ifunc resolvers, a JIT) and uses what it found ever after;
 * on a dest without a feature it dies with SIGILL (podman issue 17496: AVX-512). The dest must offer every
 * flag the source has. Overridable: the operator may know the task uses none of the missing ones.
 */
import { MAX_CPU_FLAGS } from '../../shared/kernel/cpu-flags.js';
import { note, ok, refuse, type PreflightCheck } from './preflight-check.js';

export const cpuFeaturesCheck: PreflightCheck = {
  name: 'cpu-features',
  key: 'PREFLIGHT_CPU_FEATURES',
  overridable: true,
  run({ source, dest }) {
    if (!dest) return note('not compared: needs the dest\'s answer (--to)');
    const ours = source.cpuFlags ?? [];
    const theirs = new Set((dest.cpuFlags ?? []).slice(0, MAX_CPU_FLAGS));
    if (ours.length === 0 || theirs.size === 0) return note(`the ${ours.length === 0 ? 'source' : 'dest'} reports no CPU flags: not compared`);
    const missing = ours.filter((f) => !theirs.has(f));
    if (missing.length === 0) return ok(`the dest offers all ${ours.length} CPU flags of the source`);
    const shown = missing.length <= 24 ? missing.join(' ') : `${missing.slice(0, 24).join(' ')} and ${missing.length - 24} more`;
    return refuse(`the dest ${dest.hostname} lacks ${missing.length} CPU flag(s) of the source: ${shown}`, 'dest');
  },
};
