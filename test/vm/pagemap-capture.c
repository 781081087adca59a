/*
 * Captures real /proc/self/pagemap bytes after known writes, for the soft-dirty unit tests
 * (test/fixtures/soft-dirty/). Runs inside the two-VM harness's guest, whose kernel has soft-dirty.
 *
 *   pagemap-capture OUT_DIR      writes CASE.pagemap (raw 8-byte entries) and CASE.json per case
 *
 * Each CASE.json holds what the scenario implies, not what the bytes say: the tests check the decoder against
 * it. This program also decodes the entries itself and exits 1 when the kernel disagrees with the scenario.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#define PS 4096L
static const char *out_dir;
static int failures;

static void clear_refs(void) {
  int fd = open("/proc/self/clear_refs", O_WRONLY);
  if (fd < 0 || write(fd, "4", 1) != 1) { perror("clear_refs"); exit(2); }
  close(fd);
}

static long anon_huge_kb(uintptr_t start) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  int in = 0;
  long kb = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) { in = (a <= start && start < b); continue; }
    if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
  }
  if (f) fclose(f);
  return in ? kb : 0;
}

static void list(FILE *f, const char *key, const int *set, long n) {
  fprintf(f, ",\"%s\":[", key);
  int first = 1;
  for (long i = 0; i < n; i++) if (set[i]) { fprintf(f, "%s%ld", first ? "" : ",", i); first = 0; }
  fprintf(f, "]");
}

/* Writes CASE.pagemap and CASE.json; present/dirty are per page index, dirty meaning soft-dirty and present. */
static void emit(const char *name, char *base, long n, const int *present, const int *dirty, const int *bit55, int thp, const char *note) {
  uint64_t *e = calloc(n, 8);
  int pm = open("/proc/self/pagemap", O_RDONLY);
  if (pm < 0 || pread(pm, e, n * 8, ((uintptr_t)base / PS) * 8) != n * 8) { perror("pagemap"); exit(2); }
  close(pm);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.pagemap", out_dir, name);
  FILE *f = fopen(path, "w");
  fwrite(e, 8, n, f);
  fclose(f);
  struct utsname u;
  uname(&u);
  snprintf(path, sizeof path, "%s/%s.json", out_dir, name);
  f = fopen(path, "w");
  fprintf(f, "{\"case\":\"%s\",\"kernel\":\"%s\",\"note\":\"%s\",\"firstPage\":%lu,\"pages\":%ld,\"thp\":%s", name, u.release, note,
          (unsigned long)((uintptr_t)base / PS), n, thp ? "true" : "false");
  list(f, "present", present, n);
  list(f, "softDirty", dirty, n);
  if (bit55) list(f, "bit55", bit55, n);
  fprintf(f, "}\n");
  fclose(f);
  long bad = 0;
  for (long i = 0; i < n; i++) {
    int p = ((e[i] >> 63) & 1) || ((e[i] >> 62) & 1);
    int sd = (int)((e[i] >> 55) & 1);
    if (p != present[i] || (p && sd) != dirty[i] || (bit55 && sd != bit55[i])) bad++;
  }
  printf("%s: %ld pages, %ld disagree with the scenario%s\n", name, n, bad, thp ? " (THP)" : "");
  if (bad) failures++;
  free(e);
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: pagemap-capture OUT_DIR\n"); return 2; }
  out_dir = argv[1];
  static int present[1024], dirty[1024], bit55[1024];

  /* basic: 16 pages all written, clear, then pages 1 2 7 12 written again. */
  long n = 16;
  char *m = mmap(NULL, n * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(m, n * PS, MADV_NOHUGEPAGE);
  for (long i = 0; i < n; i++) m[i * PS] = 1;
  clear_refs();
  int w1[] = {1, 2, 7, 12};
  for (unsigned i = 0; i < 4; i++) m[w1[i] * PS + 100] = 2;
  memset(present, 0, sizeof present); memset(dirty, 0, sizeof dirty);
  for (long i = 0; i < n; i++) present[i] = 1;
  for (unsigned i = 0; i < 4; i++) dirty[w1[i]] = 1;
  emit("basic", m, n, present, dirty, NULL, 0, "16 pages written, clear_refs, pages 1 2 7 12 written");

  /* holes: 32 pages, only even pages below 16 and 20..23 touched; clear; write 4 and 21; first touch of 25. */
  n = 32;
  m = mmap(NULL, n * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(m, n * PS, MADV_NOHUGEPAGE);
  memset(present, 0, sizeof present); memset(dirty, 0, sizeof dirty);
  for (long i = 0; i < 16; i += 2) { m[i * PS] = 1; present[i] = 1; }
  for (long i = 20; i < 24; i++) { m[i * PS] = 1; present[i] = 1; }
  clear_refs();
  m[4 * PS] = 3; dirty[4] = 1;
  m[21 * PS] = 3; dirty[21] = 1;
  m[25 * PS] = 3; dirty[25] = 1; present[25] = 1;
  emit("holes", m, n, present, dirty, NULL, 0, "sparse pages; after clear_refs pages 4 and 21 written, page 25 touched first");

  /* new-vma: an area mapped after the clear is soft-dirty as a whole (VM_SOFTDIRTY), present pages or not. */
  clear_refs();
  n = 8;
  m = mmap(NULL, n * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  madvise(m, n * PS, MADV_NOHUGEPAGE);
  memset(present, 0, sizeof present); memset(dirty, 0, sizeof dirty);
  for (long i = 0; i < n; i++) bit55[i] = 1;
  for (long i = 1; i < 8; i += 3) { m[i * PS] = 1; present[i] = 1; dirty[i] = 1; }
  emit("new-vma", m, n, present, dirty, bit55, 0, "mapped after clear_refs, pages 1 4 7 touched: every entry has bit 55");

  /* thp: 4 MiB, 2 MiB aligned, MADV_HUGEPAGE, all touched; clear; one byte written in page 3. */
  long huge = 512, total = 2 * huge;
  char *raw = mmap(NULL, (total + huge) * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  m = (char *)(((uintptr_t)raw + huge * PS - 1) & ~(uintptr_t)(huge * PS - 1));
  madvise(m, total * PS, MADV_HUGEPAGE);
  for (long i = 0; i < total; i++) m[i * PS] = 1;
  int thp = anon_huge_kb((uintptr_t)m) >= 2048;
  clear_refs();
  m[3 * PS + 5] = 9;
  memset(present, 0, sizeof present); memset(dirty, 0, sizeof dirty);
  for (long i = 0; i < total; i++) present[i] = 1;
  if (thp) for (long i = 0; i < huge; i++) dirty[i] = 1; else dirty[3] = 1;
  emit("thp", m, total, present, dirty, NULL, thp, "2 huge pages touched, clear_refs, one byte of page 3 written");
  return failures ? 1 : 0;
}
