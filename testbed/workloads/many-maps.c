/*
 * A task with many VMAs, after ZDTM maps06: N private file mappings of one page of FILE, each followed by a
 * written anonymous page and a PROT_NONE gap (3 VMAs per i: none merge), all written once; then it idles.
 *   many-maps FILE N   prints "ready VMAS" once mapped (VMAS: the lines of its /proc/self/maps)
 * For bench/vma-cost.ts: the freeze's cost grows with the VMAs CRIU dumps and restores, not only with the bytes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: many-maps FILE N\n"); return 2; }
  long n = atol(argv[2]), ps = sysconf(_SC_PAGESIZE);
  int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
  if (fd < 0 || ftruncate(fd, ps) != 0) { perror("open"); return 1; }
  char *start = mmap(NULL, ps * 3 * (n > 0 ? n : 1), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (start == MAP_FAILED) { perror("mmap"); return 1; }
  for (long i = 0; i < n; i++) {
    int *f = mmap(start + i * 3 * ps, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
    int *a = mmap(start + (i * 3 + 1) * ps, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (f == MAP_FAILED || a == MAP_FAILED) { perror("mmap"); return 1; }
    f[0] = (int)i * 2;
    a[0] = (int)i;
  }
  long vmas = 0;
  FILE *maps = fopen("/proc/self/maps", "r");
  for (int c; maps && (c = fgetc(maps)) != EOF;) vmas += c == '\n';
  if (maps) fclose(maps);
  printf("ready %ld\n", vmas);
  fflush(stdout);
  for (;;) pause();
}
