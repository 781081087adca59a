/*
 * Target for the tracker contract suite (test/support/tracker-contract.ts): a region of PAGES pages (plus a
 * PROT_NONE reserve of RESERVE pages right after it), changed only when told, one reply line per command:
 *   w P        rewrite page P of the region with new bytes          -> ok
 *   map N      map N new pages elsewhere, filled                     -> mapped HEXADDR
 *   unmap      unmap that mapping                                    -> ok
 *   grow       make the reserve read-write and fill it (area grows)  -> ok
 *   shrink K   unmap the last K pages of the (grown) region          -> ok
 *   fork       fork a child that rewrites region pages 0..63 and idles -> child PID
 * Prints "ready HEXADDR" (the region) once filled.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PS 4096L
static unsigned gen = 1;

static void fill(uint8_t *p, long pages) {
  for (long i = 0; i < pages; i++) { memset(p + i * PS, (int)(gen & 0xff), PS); memcpy(p + i * PS, &gen, sizeof gen); gen++; }
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: tracker-target PAGES RESERVE\n"); return 2; }
  long pages = atol(argv[1]), reserve = atol(argv[2]), len = pages + reserve;
  uint8_t *r = mmap(NULL, len * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (r == MAP_FAILED) return 1;
  madvise(r, len * PS, MADV_NOHUGEPAGE);
  if (reserve > 0) mprotect(r + pages * PS, reserve * PS, PROT_NONE);
  fill(r, pages);
  uint8_t *extra = NULL;
  long extra_pages = 0;
  printf("ready %lx\n", (unsigned long)r);
  fflush(stdout);
  char cmd[128];
  while (fgets(cmd, sizeof cmd, stdin)) {
    long n = 0;
    if (sscanf(cmd, "w %ld", &n) == 1) { fill(r + n * PS, 1); printf("ok\n"); }
    else if (sscanf(cmd, "map %ld", &n) == 1) {
      extra = mmap(NULL, n * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      madvise(extra, n * PS, MADV_NOHUGEPAGE);
      extra_pages = n;
      fill(extra, n);
      printf("mapped %lx\n", (unsigned long)extra);
    } else if (strncmp(cmd, "unmap", 5) == 0) { munmap(extra, extra_pages * PS); extra = NULL; printf("ok\n"); }
    else if (strncmp(cmd, "grow", 4) == 0) { mprotect(r + pages * PS, reserve * PS, PROT_READ | PROT_WRITE); fill(r + pages * PS, reserve); pages = len; printf("ok\n"); }
    else if (sscanf(cmd, "shrink %ld", &n) == 1) { munmap(r + (pages - n) * PS, n * PS); pages -= n; len = pages; printf("ok\n"); }
    else if (strncmp(cmd, "fork", 4) == 0) {
      pid_t c = fork();
      if (c == 0) { fill(r, 64); for (;;) pause(); }
      printf("child %d\n", (int)c);
    } else break;
    fflush(stdout);
  }
  return 0;
}
