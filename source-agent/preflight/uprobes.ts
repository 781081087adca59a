/** uprobes: CRIU refuses a task with a [uprobes] area unless --allow-uprobes (criu/proc_parse.c), which Ferry does not pass. */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const uprobesCheck: PreflightCheck = {
  name: 'uprobes',
  key: 'PREFLIGHT_UPROBES',
  overridable: false,
  run({ tree }) {
    const tasks = tree.tasks.filter((t) => t.maps.some((v) => v.path === '[uprobes]')).map((t) => `pid ${t.pid} (${t.name})`);
    return tasks.length > 0 ? refuse(`a [uprobes] area in ${some(tasks)}`) : ok('no uprobes');
  },
};
