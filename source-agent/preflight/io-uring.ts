/**
 * io_uring: CRIU 4.2's dump knows eventfd, epoll, inotify, fanotify, signalfd, timerfd, pidfd and bpf-map anon
 * inodes and refuses any other (criu/files.c, dump_one_file -> dump_unsupp_fd "anon"), io_uring among them.
 */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const ioUringCheck: PreflightCheck = {
  name: 'io-uring',
  key: 'PREFLIGHT_IO_URING',
  overridable: false,
  run({ tree }) {
    const fds = tree.tasks.flatMap((t) => t.fds.filter((f) => f.target === 'anon_inode:[io_uring]').map((f) => `pid ${t.pid} fd ${f.fd}`));
    return fds.length > 0 ? refuse(`${fds.length} io_uring fd(s): ${some(fds)}`) : ok('no io_uring fds');
  },
};
