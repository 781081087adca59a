/*
 * The tiny init a ZDTM test runs under: pid 1 of the pid namespace `ferry run` makes. A static test daemonizes
 * (its first process waits until the test proper is ready, writes the pidfile and exits), so the namespace needs
 * a pid 1 that outlives that first process and reaps what is reparented to it. It exits with the last child.
 *
 *   zdtm-init DIR CMD [ARGS...]    chdir(DIR), then run CMD as its child (make's %.pid rule, relative paths)
 */
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: zdtm-init DIR CMD [ARGS...]\n");
    return 2;
  }
  if (chdir(argv[1]) != 0) {
    perror("zdtm-init: chdir");
    return 2;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("zdtm-init: fork");
    return 2;
  }
  if (child == 0) {
    execv(argv[2], argv + 2);
    perror("zdtm-init: exec");
    _exit(127);
  }
  int status = 0;
  for (;;) {
    pid_t p = waitpid(-1, &status, 0);
    if (p < 0 && errno == ECHILD) return 0;
  }
}
