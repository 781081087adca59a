/** A zombie thread-group leader whose threads live on: CRIU refuses it ("Zombies with threads are not supported", criu/seize.c; ZDTM pthread02). */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const zombieThreadsCheck: PreflightCheck = {
  name: 'zombie-threads',
  key: 'PREFLIGHT_ZOMBIE_THREADS',
  overridable: false,
  run({ tree }) {
    const zombies = tree.tasks.filter((t) => t.state === 'Z' && t.threads > 1).map((t) => `pid ${t.pid} (${t.name}) with ${t.threads - 1} live thread(s)`);
    return zombies.length > 0 ? refuse(`zombie leader(s) with threads: ${some(zombies)}`) : ok('no zombie leader with threads');
  },
};
