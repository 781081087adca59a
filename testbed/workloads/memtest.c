/*
 * memtest: a workload that proves its memory survived a live migration.
 *
 *   memtest --name NAME --mib N --dirty-mib-per-s R --state-dir DIR [--seed S] [--hot-mib H] [--churn-mib C]
 *           [--on-resume verify|churn] [--cold-mib K --grow-mib-per-s G] [--sealed-mib P] [--content random|heap]
 *
 * It maps N MiB of private anonymous memory and fills every page with a pattern that is a pure function
 * of (seed, page, generation, word). A per-page generation table lives in the process's own memory, so it
 * is migrated together with the data it describes: after a restore the process can check itself. It then
 * rewrites pseudo-random pages of the first H MiB (default: all N) at R MiB/s in ~10 ms ticks, bumping
 * each page's generation, which gives pre-copy a known dirty rate to chase.
 *
 * With --cold-mib K the last K MiB of the mapping are PROT_NONE at start (no round can read them, as a mapping
 * made later), and --grow-mib-per-s G opens and first-touches them in order at G MiB/s: a task whose memory grows,
 * so a migration finds pages at the freeze that no round saw (post-copy's remote pages). A check skips the pages
 * not opened yet; the rewrites pick pages among those touched so far.
 *
 * With --content heap the data pages look like a managed heap instead of noise (the compression benchmark's
 * workload): a page is all zero when its key says so (7 keys in 10), else JSON-like text records whose
 * numbers and words come from the key; still a pure function of (seed, page, generation), so every check holds.
 *
 * With --sealed-mib P a mapping of P MiB more is filled with a pattern of its own and then made PROT_NONE, as a
 * task keeps data it must not touch by accident (maps04): process_vm_readv cannot read it, CRIU dumps it. Each
 * check opens it PROT_READ, checks it (its bad pages count in bad_pages, and in sealed_bad_pages) and seals it
 * again; it is never written after the fill.
 *
 * Control is by signal, results are files in DIR, written atomically (tmp + rename):
 *   start    NAME.ready.json   after the fill
 *   SIGUSR1  NAME.verify.json  every page checked against the generation table
 *   SIGUSR2  NAME.stats.json   counters and the monotonic clock, to measure the work rate
 *   SIGWINCH NAME.churn.json   address-space churn while a lazy restore streams pages in: with --churn-mib C
 *                              (a C MiB scratch mapping filled at start), munmap its first half,
 *                              madvise(DONTNEED) its third quarter and check that it reads zero, check its last
 *                              quarter's pattern; mremap the data mapping to a new address (later checks use it
 *                              there); fork a child that checks its copy of every page and exits 0 if clean
 *   SIGTERM  exit 0
 * With --on-resume, the first tick after a restore under another host pid (a migration) does at once what SIGUSR1 (NAME.resume-verify.json) or SIGWINCH (NAME.churn.json)
 * does: the task touching all its memory, or churning its address space, while a lazy restore pages it in.
 * Between reports the process holds no fd besides 0/1/2, so CRIU can carry it as it is.
 *
 * Build: gcc -O2 -pthread -Wall -Wextra -o memtest memtest.c (no other dependencies).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 10000000LL /* 10 ms */
/* After a pause (SIGSTOP, a dump, a restore on a host whose clock is elsewhere) write at most this much
 * time's worth of pages in one go: the rate must stay R, not burst to pay back the pause. Two ticks cover
 * timer jitter; anything longer is lost, as it is for a CPU-bound program, so a throttled or frozen task
 * shows in its work rate (the benchmark and the auto-converge tests read it). */
#define MAX_CATCHUP_NS (2 * TICK_NS)
#define NO_PAGE (-1LL)

/* Everything below is process memory, so it is part of what a migration has to carry. */
static const char *g_name;
static const char *g_state_dir;
static double g_mib;
static double g_hot_mib;
static double g_rate_mib;
static uint64_t g_seed;
static size_t g_page_size;
static size_t g_words_per_page;
static uint64_t g_pages;
static uint64_t g_hot_pages;
static double g_cold_mib;
static double g_grow_mib;
/* Pages [0, g_grown) have been written; the rest are still PROT_NONE (generation UNTOUCHED). */
static uint64_t g_grown;
#define UNTOUCHED UINT32_MAX
static uint64_t *g_mem;
static uint32_t *g_gen;
static uint64_t g_rng;
static uint64_t g_writes;
static uint64_t g_ticks;
static uint64_t g_verifies;
/* The page being rewritten, or NO_PAGE. A snapshot can be taken at any instruction; if it lands inside
 * write_page, that one page legitimately holds a mix of generation g-1 and g words. The in-process check runs
 * between writes and never sees it set; the rule is for a checker that reads a frozen image from outside. */
static volatile int64_t g_in_progress = NO_PAGE;

static volatile sig_atomic_t g_want_verify;
static volatile sig_atomic_t g_want_stats;
static volatile sig_atomic_t g_want_exit;
static volatile sig_atomic_t g_want_churn;
static double g_churn_mib;
static double g_sealed_mib;
static uint64_t *g_sealed;
static uint64_t g_sealed_pages;
/* --on-resume: 0 none, 1 verify, 2 churn; the host pid the last action (or the start) saw. */
static int g_on_resume;
static long g_resumed_pid;
static uint64_t *g_scratch;
static uint64_t g_scratch_pages;
static uint64_t g_churns;
static const uint64_t *g_scratch_left; /* after a churn: the scratch's last quarter, page g_scratch_left_first on */
static uint64_t g_scratch_left_first;
/* --content heap (1); g_expect and g_expect_prev: one page each, what check_page compares a heap page with. */
static int g_heap;
static uint64_t *g_expect;
static uint64_t *g_expect_prev;

static uint64_t mix64(uint64_t z) {
  /* splitmix64's finaliser: a bijection, so distinct inputs never collide. */
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

#define GOLDEN 0x9E3779B97F4A7C15ULL

/* Per-page key: differs by page (so a page copied to the wrong address is caught) and by generation (so a
 * stale copy of the right page is caught). */
static uint64_t page_key(uint64_t page, uint32_t gen) {
  return mix64(mix64(g_seed ^ (page * GOLDEN)) ^ ((uint64_t)gen * 0xD1B54A32D192ED03ULL));
}

static uint64_t word_value(uint64_t key, uint64_t word) { return mix64(key + (word + 1) * GOLDEN); }

static const char *const HEAP_NAMES[] = {"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"};
static const char *const HEAP_TAGS[] = {"alpha", "beta", "gamma", "delta", "prod", "eu-west", "cache", "batch"};

/* A heap-like page for `key`: zero for 7 keys in 10, else JSON records (~40 bits of entropy per ~90 bytes, so
 * a fast compressor gets a few times smaller, as on a real heap of strings and small objects). */
static void heap_page(uint64_t key, uint64_t *out) {
  char *bytes = (char *)out;
  if ((key >> 32) % 10 < 7) {
    memset(bytes, 0, g_page_size);
    return;
  }
  size_t off = 0;
  uint64_t r = key;
  while (off < g_page_size) {
    r = mix64(r + GOLDEN);
    char rec[160];
    int n = snprintf(rec, sizeof rec, "{\"id\":%u,\"user\":\"%s\",\"score\":%u,\"tags\":[\"%s\",\"%s\"],\"active\":%s},\n",
                     (unsigned)(r & 0xFFFFF), HEAP_NAMES[(r >> 20) & 7], (unsigned)((r >> 23) % 1000), HEAP_TAGS[(r >> 33) & 7],
                     HEAP_TAGS[(r >> 36) & 7], ((r >> 39) & 1) ? "true" : "false");
    size_t take = (size_t)n < g_page_size - off ? (size_t)n : g_page_size - off;
    memcpy(bytes + off, rec, take);
    off += take;
  }
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000LL;
}

/* getpid() is the namespace pid (1 when started under unshare --pid). The reports also carry the host pid,
 * so a driver can tell an original from its restored copy: /proc is the host's mount, so /proc/self names
 * the host pid. It is read each time because a restore changes it. readlink opens no fd. */
static long host_pid(void) {
  char buf[32];
  ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
  if (n <= 0) return (long)getpid();
  buf[n] = '\0';
  return strtol(buf, NULL, 10);
}

static void write_page(uint64_t page, uint32_t gen) {
  uint64_t *words = g_mem + page * g_words_per_page;
  uint64_t key = page_key(page, gen);
  /* Signal fences keep the compiler from moving these stores across each other: the order must hold at every
   * instruction, because SIGSTOP/CRIU can freeze the task between any two of them. */
  g_in_progress = (int64_t)page;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  g_gen[page] = gen;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  if (g_heap) heap_page(key, words);
  else
    for (uint64_t w = 0; w < g_words_per_page; w++) words[w] = word_value(key, w);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  g_in_progress = NO_PAGE;
}

/* Returns the number of wrong words in the page. */
static uint64_t check_page(uint64_t page) {
  const uint64_t *words = g_mem + page * g_words_per_page;
  uint32_t gen = g_gen[page];
  uint64_t bad = 0;
  if (gen == UNTOUCHED) return 0; /* PROT_NONE still: nothing to read */
  uint64_t key = page_key(page, gen);
  int torn_ok = g_in_progress == (int64_t)page;
  uint64_t prev_key = torn_ok ? page_key(page, gen - 1) : 0;
  if (g_heap) {
    heap_page(key, g_expect);
    if (torn_ok && gen > 0) heap_page(prev_key, g_expect_prev);
  }
  for (uint64_t w = 0; w < g_words_per_page; w++) {
    uint64_t v = words[w];
    if (v == (g_heap ? g_expect[w] : word_value(key, w))) continue;
    /* A first touch interrupted: its words were zero before. */
    if (torn_ok && (gen == 0 ? v == 0 : v == (g_heap ? g_expect_prev[w] : word_value(prev_key, w)))) continue;
    bad++;
  }
  return bad;
}

static uint64_t next_rand(void) {
  /* xorshift64*: the state is in process memory, so the write sequence continues across a migration. */
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545F4914F6CDD1DULL;
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Open, write, close, rename: readers never see a partial report and no fd outlives the call. */
static void publish(const char *kind, const char *json) {
  char path[PATH_MAX], tmp[PATH_MAX];
  long hp = host_pid();
  if (snprintf(path, sizeof path, "%s/%s.%s.json", g_state_dir, g_name, kind) >= (int)sizeof path ||
      snprintf(tmp, sizeof tmp, "%s/.%s.%s.json.tmp-%ld", g_state_dir, g_name, kind, hp) >= (int)sizeof tmp) {
    fprintf(stderr, "memtest %s: state path too long\n", g_name);
    return;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    fprintf(stderr, "memtest %s: open %s: %s\n", g_name, tmp, strerror(errno));
    return;
  }
  int err = write_all(fd, json, strlen(json)) < 0 ? errno : 0;
  if (close(fd) < 0 && err == 0) err = errno;
  if (err == 0 && rename(tmp, path) < 0) err = errno;
  if (err != 0) {
    fprintf(stderr, "memtest %s: write %s: %s\n", g_name, path, strerror(err));
    unlink(tmp);
  }
}

/* The sealed mapping's pattern: a pure function of the page, as the scratch's. */
static uint64_t sealed_word(uint64_t page, uint64_t w) { return word_value(page_key(page + (2ULL << 40), 0), w); }

/* Bad pages of the sealed mapping, opened for the check and sealed again. */
static uint64_t check_sealed(void) {
  size_t len = g_sealed_pages * g_page_size;
  uint64_t bad = 0;
  if (g_sealed_pages == 0) return 0;
  if (mprotect(g_sealed, len, PROT_READ) < 0) return g_sealed_pages;
  for (uint64_t p = 0; p < g_sealed_pages; p++)
    for (uint64_t w = 0; w < g_words_per_page; w++)
      if (g_sealed[p * g_words_per_page + w] != sealed_word(p, w)) {
        bad++;
        break;
      }
  mprotect(g_sealed, len, PROT_NONE);
  return bad;
}

static void do_verify(const char *kind) {
  /* A driver accepts only a check that began after its request, so it needs the start, not just the end. */
  int64_t started_at = real_ms();
  int64_t t0 = mono_ns();
  uint64_t bad_pages = 0, bad_words = 0;
  int64_t first_bad = NO_PAGE;
  for (uint64_t p = 0; p < g_pages; p++) {
    uint64_t bad = check_page(p);
    if (bad == 0) continue;
    if (bad_pages == 0) first_bad = (int64_t)p;
    bad_pages++;
    bad_words += bad;
  }
  uint64_t sealed_bad = check_sealed();
  bad_pages += sealed_bad;
  g_verifies++;
  int64_t in_progress = g_in_progress;
  char first_bad_s[24], in_progress_s[24], json[1100];
  if (first_bad == NO_PAGE) strcpy(first_bad_s, "null");
  else snprintf(first_bad_s, sizeof first_bad_s, "%" PRId64, first_bad);
  if (in_progress == NO_PAGE) strcpy(in_progress_s, "null");
  else snprintf(in_progress_s, sizeof in_progress_s, "%" PRId64, in_progress);
  snprintf(json, sizeof json,
           "{\"name\":\"%s\",\"pid\":%ld,\"host_pid\":%ld,\"pages\":%" PRIu64 ",\"bad_pages\":%" PRIu64
           ",\"bad_words\":%" PRIu64 ",\"first_bad_page\":%s,\"in_progress\":%s,\"writes\":%" PRIu64
           ",\"ticks\":%" PRIu64 ",\"verifies\":%" PRIu64 ",\"mib\":%g,\"hot_mib\":%g,\"dirty_mib_per_s\":%g"
           ",\"seed\":\"%" PRIu64 "\",\"verify_ms\":%.3f,\"started_at_ms\":%" PRId64
           ",\"verified_at_ms\":%" PRId64 ",\"grown_pages\":%" PRIu64 ",\"sealed_pages\":%" PRIu64
           ",\"sealed_bad_pages\":%" PRIu64 "}\n",
           g_name, (long)getpid(), host_pid(), g_pages, bad_pages, bad_words, first_bad_s, in_progress_s, g_writes,
           g_ticks, g_verifies, g_mib, g_hot_mib, g_rate_mib, g_seed, (double)(mono_ns() - t0) / 1e6, started_at,
           real_ms(), g_grown, g_sealed_pages, sealed_bad);
  publish(kind, json);
}

static void do_stats(void) {
  char json[512];
  snprintf(json, sizeof json,
           "{\"name\":\"%s\",\"pid\":%ld,\"host_pid\":%ld,\"writes\":%" PRIu64 ",\"ticks\":%" PRIu64
           ",\"mono_ms\":%.3f,\"at_ms\":%" PRId64 "}\n",
           g_name, (long)getpid(), host_pid(), g_writes, g_ticks, (double)mono_ns() / 1e6, real_ms());
  publish("stats", json);
}

/* The scratch mapping's pattern: a pure function of the page, so any copy can check it. */
static uint64_t scratch_word(uint64_t page, uint64_t w) { return word_value(page_key(page + (1ULL << 40), 0), w); }

/* Checks scratch pages [from, to), the mapping `base` holding page `from` first. */
static uint64_t check_scratch_at(const uint64_t *base, uint64_t from, uint64_t to) {
  uint64_t bad = 0;
  for (uint64_t p = from; p < to; p++) {
    const uint64_t *words = base + (p - from) * g_words_per_page;
    for (uint64_t w = 0; w < g_words_per_page; w++)
      if (words[w] != scratch_word(p, w)) {
        bad++;
        break;
      }
  }
  return bad;
}

static void do_churn(void) {
  int64_t started_at = real_ms();
  size_t ps = g_page_size;
  size_t len = g_pages * ps;
  /* 1. munmap the scratch's first half, DONTNEED its third quarter (must read zero), check its last quarter. */
  uint64_t unmapped = 0, zeroed = 0, zero_bad = 0, scratch_bad = 0;
  if (g_scratch && g_scratch_pages >= 4) {
    uint64_t half = g_scratch_pages / 2, q3 = g_scratch_pages * 3 / 4;
    if (munmap(g_scratch, half * ps) == 0) unmapped = half;
    uint64_t *z = g_scratch + half * g_words_per_page;
    if (madvise(z, (q3 - half) * ps, MADV_DONTNEED) == 0) zeroed = q3 - half;
    for (uint64_t p = 0; p < zeroed; p++)
      for (uint64_t w = 0; w < g_words_per_page; w++)
        if (z[p * g_words_per_page + w] != 0) {
          zero_bad++;
          break;
        }
    scratch_bad = check_scratch_at(g_scratch + q3 * g_words_per_page, q3, g_scratch_pages);
    /* What is left of the scratch: its last quarter (the DONTNEED'd quarter reads zero now); once only. */
    g_scratch_left = g_scratch + q3 * g_words_per_page;
    g_scratch_left_first = q3;
    g_scratch = NULL;
  }
  /* 2. mremap the data to a new address (a placeholder reserves it): its pages move with it. */
  uintptr_t from = (uintptr_t)g_mem, to = 0;
  void *hole = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (hole != MAP_FAILED) {
    void *moved = mremap(g_mem, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, hole);
    if (moved == MAP_FAILED) munmap(hole, len);
    else {
      g_mem = moved;
      to = (uintptr_t)moved;
    }
  }
  /* 3. fork: the child checks its copy of every page (a lazy restore must fill the child too). */
  int child_exit = -1;
  pid_t child = fork();
  if (child == 0) {
    uint64_t bad = 0;
    for (uint64_t p = 0; p < g_pages; p++) bad += check_page(p) != 0;
    if (g_scratch_left) bad += check_scratch_at(g_scratch_left, g_scratch_left_first, g_scratch_pages);
    _exit(bad == 0 ? 0 : 1);
  }
  if (child > 0) {
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    child_exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  g_churns++;
  char json[768];
  snprintf(json, sizeof json,
           "{\"name\":\"%s\",\"pid\":%ld,\"host_pid\":%ld,\"child_exit\":%d,\"remapped_from\":\"0x%" PRIxPTR
           "\",\"remapped_to\":\"0x%" PRIxPTR "\",\"unmapped_pages\":%" PRIu64 ",\"zeroed_pages\":%" PRIu64
           ",\"zero_bad_pages\":%" PRIu64 ",\"scratch_bad_pages\":%" PRIu64 ",\"churns\":%" PRIu64
           ",\"started_at_ms\":%" PRId64 ",\"churned_at_ms\":%" PRId64 "}\n",
           g_name, (long)getpid(), host_pid(), child_exit, from, to, unmapped, zeroed, zero_bad, scratch_bad, g_churns,
           started_at, real_ms());
  publish("churn", json);
}

/* Handlers only set flags: the work (page checks, file writes) runs in the main loop, where no page write
 * is half done and no lock can be held. */
static void on_signal(int sig) {
  if (sig == SIGUSR1) g_want_verify = 1;
  else if (sig == SIGUSR2) g_want_stats = 1;
  else if (sig == SIGWINCH) g_want_churn = 1;
  else g_want_exit = 1;
}

static void install_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  /* No SA_RESTART: a signal cuts the tick's sleep short, so a request is served at once. As pid 1 of a pid
   * namespace, signals without a handler are dropped, which is why SIGINT and SIGHUP are caught too. */
  int sigs[] = {SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP, SIGWINCH};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    if (sigaction(sigs[i], &sa, NULL) < 0) {
      perror("memtest: sigaction");
      exit(1);
    }
  }
}

/* A private mapping of `pages` pages, each word w of page p set to word(p, w); NULL (reported) on failure. */
static uint64_t *map_filled(uint64_t pages, uint64_t (*word)(uint64_t, uint64_t), const char *what) {
  uint64_t *m = mmap(NULL, pages * g_page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    fprintf(stderr, "memtest: mmap %s: %s\n", what, strerror(errno));
    return NULL;
  }
  madvise(m, pages * g_page_size, MADV_NOHUGEPAGE);
  for (uint64_t p = 0; p < pages; p++)
    for (uint64_t w = 0; w < g_words_per_page; w++) m[p * g_words_per_page + w] = word(p, w);
  return m;
}

static void usage(const char *msg) {
  if (msg) fprintf(stderr, "memtest: %s\n", msg);
  fprintf(stderr,
          "usage: memtest --name NAME --mib N --dirty-mib-per-s R --state-dir DIR [--seed S] [--hot-mib H]"
          " [--churn-mib C] [--on-resume verify|churn] [--cold-mib K --grow-mib-per-s G] [--sealed-mib P]"
          " [--content random|heap]\n"
          "  NAME: [A-Za-z0-9._-]{1,64}; N > 0 MiB; R >= 0 MiB/s (0 = idle); S: u64 (default 1);\n"
          "  H: rewrite only the first H MiB (default N); C: scratch MiB for SIGWINCH's churn (default 0);\n"
          "  K: the last K MiB untouched at start (default 0), first-touched in order at G MiB/s (default 0);\n"
          "  P: MiB of a mapping filled and then made PROT_NONE, checked by every check (default 0)\n"
          "  --content: random words (default) or heap-like pages (70 %% zero, the rest JSON-like text)\n");
  exit(2);
}

static double parse_number(const char *s, const char *what) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= 0)) {
    fprintf(stderr, "memtest: bad %s: %s\n", what, s);
    usage(NULL);
  }
  return v;
}

static void parse_args(int argc, char **argv) {
  static const struct option opts[] = {
      {"name", required_argument, NULL, 'n'},      {"mib", required_argument, NULL, 'm'},
      {"dirty-mib-per-s", required_argument, NULL, 'r'}, {"state-dir", required_argument, NULL, 'd'},
      {"seed", required_argument, NULL, 's'},      {"hot-mib", required_argument, NULL, 'h'},
      {"churn-mib", required_argument, NULL, 'c'},
      {"on-resume", required_argument, NULL, 'o'},
      {"sealed-mib", required_argument, NULL, 'P'}, {"cold-mib", required_argument, NULL, 'k'},  {"grow-mib-per-s", required_argument, NULL, 'g'},
      {"content", required_argument, NULL, 'C'},
      {NULL, 0, NULL, 0},
  };
  int have_rate = 0;
  g_seed = 1;
  g_hot_mib = -1;
  for (;;) {
    int c = getopt_long(argc, argv, "", opts, NULL);
    if (c == -1) break;
    switch (c) {
    case 'n': g_name = optarg; break;
    case 'm': g_mib = parse_number(optarg, "--mib"); break;
    case 'r': g_rate_mib = parse_number(optarg, "--dirty-mib-per-s"); have_rate = 1; break;
    case 'd': g_state_dir = optarg; break;
    case 'h': g_hot_mib = parse_number(optarg, "--hot-mib"); break;
    case 'c': g_churn_mib = parse_number(optarg, "--churn-mib"); break;
    case 'k': g_cold_mib = parse_number(optarg, "--cold-mib"); break;
    case 'P': g_sealed_mib = parse_number(optarg, "--sealed-mib"); break;
    case 'g': g_grow_mib = parse_number(optarg, "--grow-mib-per-s"); break;
    case 'C':
      if (strcmp(optarg, "random") == 0) g_heap = 0;
      else if (strcmp(optarg, "heap") == 0) g_heap = 1;
      else usage("--content must be random or heap");
      break;
    case 'o':
      if (strcmp(optarg, "verify") == 0) g_on_resume = 1;
      else if (strcmp(optarg, "churn") == 0) g_on_resume = 2;
      else usage("--on-resume must be verify or churn");
      break;
    case 's': {
      char *end;
      errno = 0;
      g_seed = strtoull(optarg, &end, 0);
      if (errno != 0 || end == optarg || *end != '\0') usage("bad --seed");
      break;
    }
    default: usage(NULL);
    }
  }
  if (optind != argc) usage("unexpected argument");
  if (!g_name || !g_state_dir || g_mib <= 0 || !have_rate)
    usage("--name, --mib, --dirty-mib-per-s and --state-dir are required");
  /* The name goes into file names and unescaped JSON in fixed buffers. */
  static const char name_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
  size_t name_len = strlen(g_name);
  if (name_len == 0 || name_len > 64 || g_name[0] == '.' || strspn(g_name, name_chars) != name_len)
    usage("NAME must match [A-Za-z0-9._-]{1,64} and not start with '.'");
  if (g_hot_mib < 0) g_hot_mib = g_mib;
  if (g_hot_mib > g_mib) usage("--hot-mib must not exceed --mib");
  if (g_cold_mib >= g_mib) usage("--cold-mib must be less than --mib");
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  /* A launcher may leak fds without O_CLOEXEC; any fd beyond 0/1/2 would be one more thing CRIU has to carry
   * (or refuse), so drop them before anything else. */
  close_range(3, ~0U, 0);
  install_handlers();

  g_page_size = (size_t)sysconf(_SC_PAGESIZE);
  g_words_per_page = g_page_size / sizeof(uint64_t);
  g_pages = (uint64_t)(g_mib * 1024 * 1024) / g_page_size;
  g_hot_pages = (uint64_t)(g_hot_mib * 1024 * 1024) / g_page_size;
  if (g_pages == 0) usage("--mib is smaller than one page");
  if (g_heap && (!(g_expect = malloc(g_page_size)) || !(g_expect_prev = malloc(g_page_size)))) {
    perror("memtest: malloc");
    return 1;
  }
  g_rng = mix64(g_seed ^ 0x5DEECE66DULL) | 1; /* xorshift state must not be 0 */

  size_t len = g_pages * g_page_size;
  g_mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  g_gen = mmap(NULL, g_pages * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g_mem == MAP_FAILED || g_gen == MAP_FAILED) {
    perror("memtest: mmap");
    return 1;
  }
  /* Dirty tracking is per 4 KiB page: with a huge page, one write would dirty 2 MiB and the dirty rate would
   * no longer be R. Best effort; a kernel without THP fails this harmlessly. */
  madvise(g_mem, len, MADV_NOHUGEPAGE);
  g_scratch_pages = (uint64_t)(g_churn_mib * 1024 * 1024) / g_page_size;
  if (g_scratch_pages > 0 && !(g_scratch = map_filled(g_scratch_pages, scratch_word, "scratch"))) return 1;
  g_sealed_pages = (uint64_t)(g_sealed_mib * 1024 * 1024) / g_page_size;
  if (g_sealed_pages > 0) {
    if (!(g_sealed = map_filled(g_sealed_pages, sealed_word, "sealed"))) return 1;
    if (mprotect(g_sealed, g_sealed_pages * g_page_size, PROT_NONE) < 0) {
      perror("memtest: mprotect sealed");
      return 1;
    }
  }

  g_resumed_pid = host_pid();
  int64_t t0 = mono_ns();
  g_grown = g_pages - (uint64_t)(g_cold_mib * 1024 * 1024) / g_page_size;
  for (uint64_t p = 0; p < g_grown; p++) write_page(p, 0);
  for (uint64_t p = g_grown; p < g_pages; p++) g_gen[p] = UNTOUCHED;
  if (g_grown < g_pages && mprotect((char *)g_mem + g_grown * g_page_size, (g_pages - g_grown) * g_page_size, PROT_NONE) < 0) {
    perror("memtest: mprotect cold");
    return 1;
  }
  double fill_ms = (double)(mono_ns() - t0) / 1e6;

  char json[512];
  snprintf(json, sizeof json,
           "{\"name\":\"%s\",\"pid\":%ld,\"host_pid\":%ld,\"pages\":%" PRIu64 ",\"page_size\":%zu,\"fill_ms\":%.3f"
           ",\"mib\":%g,\"hot_mib\":%g,\"dirty_mib_per_s\":%g,\"seed\":\"%" PRIu64 "\",\"base\":\"0x%" PRIxPTR "\"}\n",
           g_name, (long)getpid(), host_pid(), g_pages, g_page_size, fill_ms, g_mib, g_hot_mib, g_rate_mib, g_seed,
           (uintptr_t)g_mem);
  publish("ready", json);

  double pages_per_ns = g_rate_mib * 1024.0 * 1024.0 / (double)g_page_size / 1e9;
  double grow_pages_per_ns = g_grow_mib * 1024.0 * 1024.0 / (double)g_page_size / 1e9;
  double budget = 0, grow_budget = 0;
  int64_t last = mono_ns();
  const struct timespec tick = {0, TICK_NS};
  while (!g_want_exit) {
    if (g_want_verify) {
      g_want_verify = 0;
      do_verify("verify");
    }
    if (g_want_stats) {
      g_want_stats = 0;
      do_stats();
    }
    if (g_want_churn) {
      g_want_churn = 0;
      do_churn();
    }
    int64_t now = mono_ns();
    int64_t dt = now - last;
    last = now;
    /* Every tick, not on a gap: CRIU restores the task in a time namespace whose CLOCK_MONOTONIC continues from the
     * dump, so the downtime does not show as a gap. A readlink is a couple of microseconds. */
    if (g_on_resume != 0) {
      long hp = host_pid();
      if (hp != g_resumed_pid) {
        g_resumed_pid = hp;
        if (g_on_resume == 1) do_verify("resume-verify");
        else do_churn();
      }
    }
    /* A restore on another host can move CLOCK_MONOTONIC either way: never go negative, never burst. */
    if (dt < 0) dt = 0;
    if (dt > MAX_CATCHUP_NS) dt = MAX_CATCHUP_NS;
    if (g_grown < g_pages) {
      grow_budget += grow_pages_per_ns * (double)dt;
      uint64_t n = (uint64_t)grow_budget;
      grow_budget -= (double)n;
      for (uint64_t i = 0; i < n && g_grown < g_pages; i++) {
        /* Merges with the open part before it: the mapping grows, its VMA count does not. */
        if (mprotect((char *)g_mem + g_grown * g_page_size, g_page_size, PROT_READ | PROT_WRITE) < 0) abort();
        write_page(g_grown++, 0);
      }
    }
    uint64_t span = g_hot_pages < g_grown ? g_hot_pages : g_grown;
    if (span > 0) {
      budget += pages_per_ns * (double)dt;
      uint64_t n = (uint64_t)budget;
      budget -= (double)n;
      for (uint64_t i = 0; i < n; i++) {
        uint64_t p = next_rand() % span;
        write_page(p, g_gen[p] + 1);
        g_writes++;
      }
    }
    g_ticks++;
    /* EINTR is the point (see install_handlers); CRIU restarts an interrupted sleep transparently. */
    clock_nanosleep(CLOCK_MONOTONIC, 0, &tick, NULL);
  }
  return 0;
}
