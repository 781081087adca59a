/*
 * ferry-pager: Ferry's lazy-pages daemon for one `criu restore --lazy-pages` (issue 11; contract in
 * docs of the design: plan file, CLI, control frames, status file).
 *
 *   ferry_pager --plan FILE --socket IMAGES/lazy-pages.socket --control SESSION/pager/control.sock
 *               --status SESSION/pager/status --pidfile SESSION/restored.pid [--threads N] [--log FILE]
 *
 * It receives each restored task's userfaultfd from CRIU, fills the task's lazy ranges from the page store the
 * plan names (faults first, the rest by N background threads with one UFFDIO_COPY per address-contiguous run),
 * serves a page only once it is confirmed (plan flag, or CONFIRM/REPLACE from the agent over the control socket),
 * checks every store page against the plan's XXH3-128 hash before it copies it, follows the task's fork, mremap,
 * munmap and madvise(DONTNEED) events, and exits 0 once every page is in. Post-copy (issue 12): a REMOTE_FILE page
 * has no bytes on the dest and is served only from a REPLACE (kept in the spill file, see g_spill); a fault on it
 * waits as long as it takes. Faults that waited are timed (waitP50Us, waitP99Us, waitMaxUs in the stats). A guardian process holds a dup of every
 * uffd: if the pager dies, the registrations stay (the task blocks, never reads a zero page) and the guardian
 * kills the restored tree.
 *
 * Exit codes: 0 filled; 2 bad plan or arguments (nothing touched); 3 failed (the tree was killed); 4 SIGTERM
 * (the tree was killed).
 *
 * Facts this relies on (CRIU 4.2.1, kernel 6.18): CRIU sends each task's uffd before its restorer registers the
 * task's lazy VMAs, so the background fill waits for RSTF (a copy before it fails with ENOENT); faults are served
 * from the first uffd on, and there are some: the restorer itself touches a lazy page or two (the thread's TLS,
 * where sys_rseq writes), so an unconfirmed page there blocks `criu restore` until a CONFIRM comes. Control
 * frames name a task by its ns pid (the image pid, as in the plan). fillUs runs from RSTF to the last page;
 * firstFaultUs from RSTF to the first fault (0 when it came before RSTF).
 *
 * Threads and locks. The main thread owns every socket and reads every uffd (epoll); it serves faults itself.
 * Fill threads copy in the background. A process's page states and ranges are guarded by its rwlock: the main
 * thread holds it exclusively while it reads and applies the process's uffd messages, fill threads hold it
 * shared around their ioctls, so no fill lands after a REMOVE's zap or at a pre-mremap address. g_mu guards
 * the plan-level page flags' writers, the work queue, the process list and the want list. Lock order: a
 * process's rwlock, then g_mu.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* ---- limits and wire constants (the design's, kept in step with dest-agent/lazy/pager-plan.ts) ---- */
#define PLAN_MAGIC "FRYPLAN1"
#define PLAN_VERSION 1
#define MAX_FILES 65536
#define MAX_TASKS 4096
#define MAX_PROCS 65536 /* plan tasks plus their forked children */
#define ZERO_FILE 0xFFFFFFFFu
#define REMOTE_FILE 0xFFFFFFFEu /* post-copy: no bytes here; only a REPLACE makes the page ready */
#define PAGE_CONFIRMED 1u
#define RSTF 0x52535446u
#define CHUNK_PAGES 256
#define FAULT_CLUSTER 16 /* pages served around a fault when they are ready */
#define WANT_CLUSTER 64  /* unconfirmed pages asked for around a fault */
#define MAX_THREADS 64
#define HASH_BYTES 16

#define F_CONFIRM 1
#define F_REPLACE 2
#define F_HELLO 101
#define F_WANT 102
#define F_PROGRESS 103
#define F_DONE 104
#define F_FAILED 105
#define FRAME_HEADER 32
#define WANT_BYTES_FLAG 1u
#define OUTBUF_MAX (4u << 20)

/* Plan-level page flags (per task, shared by a task and its forked children). */
#define PF_CONFIRMED 1u
#define PF_DAMAGED 2u /* the store's bytes do not match the hash: waits for REPLACE */
#define PF_REPLACED 4u
#define PF_WANTED 8u /* a WANT covers it */
#define PF_WANTED_BYTES 16u
#define PF_REMOTE 32u /* REMOTE_FILE in the plan: a CONFIRM never makes it ready */

#define MAX_WAIT_SAMPLES (1u << 20)

/* Per-process page states. */
enum { ST_NONE = 0, ST_PENDING, ST_CLAIMED, ST_FILLED, ST_DROPPED };

struct plan_range {
  uint64_t start, n_pages, first_index;
};
struct plan_page {
  uint32_t file, flags;
  uint64_t offset;
};

struct store_file {
  char *path;
  int fd;
  const uint8_t *map;
  uint64_t size;
};

struct ptask {
  uint32_t ns_pid;
  uint32_t n_ranges;
  uint64_t n_pages;
  const struct plan_range *ranges;
  const struct plan_page *pages;
  const uint8_t *hashes;
  _Atomic uint8_t *pf;          /* PF_* per page */
  uint64_t spill_first;         /* offset of its page 0 in the spill file, in pages */
  uint64_t range_pages;
  bool seen;
};

struct range {
  uint64_t start; /* current address (follows mremap) */
  uint64_t n;
  uint64_t first; /* manifest index of its first page */
};

struct waiter {
  uint64_t idx, addr;
  struct timespec since; /* when the fault's message was read */
};

struct proc {
  struct ptask *t; /* NULL: a pid not in the plan (faults get zero pages) */
  uint32_t pid;
  int uffd;
  int id;
  pthread_rwlock_t lock;
  struct range *r;
  size_t nr, rcap;
  _Atomic uint8_t *st;
  atomic_bool exited;
  bool swept;
  bool forked; /* a child the task forked during the fill (not one of criu's tasks) */
  bool retry; /* a fault's copy hit EAGAIN: serve its waiters again soon (main thread only) */
  struct waiter *wait;
  size_t nwait, wcap;
  uint64_t cursor; /* background pass over the manifest indices (g_mu) */
};

struct work {
  struct proc *p;
  uint64_t idx, n;
};

struct want {
  uint32_t task; /* plan task index */
  uint64_t idx, n;
  uint32_t flags;
};

/* ---- global state ---- */
static long g_ps;
static const char *o_plan, *o_socket, *o_control, *o_status, *o_pidfile, *o_log;
static int o_threads;
static int g_logfd = 2;
static uint8_t *g_plan;
static size_t g_plan_size;
static uint32_t g_nfiles, g_ntasks;
static struct store_file *g_files;
static struct ptask *g_tasks;
static uint8_t g_zero_hash[HASH_BYTES];
static unsigned long long g_start_time; /* our /proc start time (jiffies since boot) */
static struct timespec g_t0;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static struct proc **g_procs;
static size_t g_nprocs;
static struct work *g_q;
static size_t g_qhead, g_qlen, g_qcap;
static struct want *g_wants;
static size_t g_nwants, g_wcap, g_wsent; /* g_wants[g_wsent..] not sent on the current connection yet */
static bool g_stop;
static int g_wake_fd = -1; /* eventfd: fill threads -> main thread (new wants, exits, failures) */
static char g_fail_reason[256];
static atomic_bool g_failed;

static atomic_uint_fast64_t s_filled, s_total, s_faults, s_faults_waited, s_zero, s_replaced, s_damaged, s_dropped,
    s_forks, s_pending, s_exited_tasks;
static atomic_int_fast64_t s_fill_us = 0, s_first_fault_us = -1;
static uint64_t s_remote; /* REMOTE_FILE pages of the plan */

/*
 * REPLACE bytes live in one spill file beside the control socket (replaced.pages: created exclusively, unlinked at
 * once, sparse, mapped shared once): page i of a task at (spill_first + i) * ps. Page cache, not anonymous memory,
 * so a post-copy that replaces most of a large task does not grow the pager's RSS; and no allocation per page.
 */
static uint8_t *g_spill;
static uint64_t g_spill_pages;

/*
 * Fault-wait samples (main thread only): each fault that waited, from its message's read to its wake, in us.
 * Kept exactly up to MAX_WAIT_SAMPLES, then only counted (faultsWaited) and the max kept.
 */
static uint32_t *g_wait, *g_wait_scratch;
static size_t g_nwait_samples, g_wait_cap;
static uint32_t g_wait_max, g_wait_p50, g_wait_p99;
static size_t g_wait_computed = 0; /* samples the cached percentiles cover */
static struct timespec g_wait_computed_at;
static atomic_bool g_restore_finished;
static struct timespec g_rstf_at;

static int g_guardian_sk = -1;
static pid_t g_guardian_pid = -1;
static pid_t g_criu_pid = -1;

/* ---- small helpers ---- */
static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...) {
  char buf[1024];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int n = snprintf(buf, sizeof buf, "%lld.%03ld ferry-pager[%d]: ", (long long)ts.tv_sec, ts.tv_nsec / 1000000,
                   (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : ((size_t)m > sizeof buf - (size_t)n - 2 ? sizeof buf - (size_t)n - 2 : (size_t)m));
  buf[len++] = '\n';
  ssize_t w = write(g_logfd, buf, len);
  (void)w;
}

static int64_t us_since(const struct timespec *a) {
  struct timespec b;
  clock_gettime(CLOCK_MONOTONIC, &b);
  return (int64_t)(b.tv_sec - a->tv_sec) * 1000000 + (b.tv_nsec - a->tv_nsec) / 1000;
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) {
    logmsg("out of memory (%zu x %zu)", n, sz);
    _exit(3);
  }
  return p;
}

static void grow(void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return;
  size_t nc = *cap ? *cap * 2 : 16;
  while (nc < need) nc *= 2;
  void *p = realloc(*arr, nc * elem);
  if (!p) {
    logmsg("out of memory growing to %zu", nc);
    _exit(3);
  }
  *arr = p;
  *cap = nc;
}

static unsigned long long proc_start_time(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (!p) return 0;
  p += 2; /* field 3 */
  for (int f = 3; f < 22 && *p; f++) {
    p = strchr(p, ' ');
    if (!p) return 0;
    p++;
  }
  return strtoull(p, NULL, 10);
}

/* ---- fault-wait samples ---- */
/* The k-th smallest of a[0..n) (n > 0), reordering a (quickselect: O(n), no sort of a million samples). */
static uint32_t select_kth(uint32_t *a, long n, long k) {
  long lo = 0, hi = n - 1;
  while (lo < hi) {
    uint32_t pivot = a[lo + (hi - lo) / 2];
    long i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        uint32_t x = a[i];
        a[i] = a[j];
        a[j] = x;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/* Nearest rank: the smallest sample with at least q percent of the samples at or below it. */
static long rank_of(size_t n, unsigned q) { return (long)((n * q + 99) / 100) - 1; }

/* The cached percentiles, recomputed when samples came since, at most once a second unless forced (the end). */
static void wait_stats_update(bool force) {
  size_t n = g_nwait_samples;
  if (n == g_wait_computed) return;
  if (!force && g_wait_computed > 0 && us_since(&g_wait_computed_at) < 1000000) return;
  memcpy(g_wait_scratch, g_wait, n * sizeof *g_wait);
  g_wait_p50 = select_kth(g_wait_scratch, (long)n, rank_of(n, 50));
  g_wait_p99 = select_kth(g_wait_scratch, (long)n, rank_of(n, 99));
  g_wait_computed = n;
  clock_gettime(CLOCK_MONOTONIC, &g_wait_computed_at);
}

/* A fault that waited was woken now (main thread). */
static void note_wait(const struct timespec *since) {
  int64_t us = us_since(since);
  uint32_t v = us < 0 ? 0 : us > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)us;
  if (v > g_wait_max) g_wait_max = v;
  if (g_nwait_samples >= MAX_WAIT_SAMPLES) return;
  if (g_nwait_samples == g_wait_cap) {
    size_t cap = g_wait_cap;
    grow((void **)&g_wait, &g_wait_cap, g_nwait_samples + 1, sizeof *g_wait);
    grow((void **)&g_wait_scratch, &cap, g_wait_cap, sizeof *g_wait_scratch);
  }
  g_wait[g_nwait_samples++] = v;
}

/* ---- status file ---- */
static void stats_json(char *buf, size_t len) {
  wait_stats_update(false);
  snprintf(buf, len,
           "\"filledPages\":%" PRIuFAST64 ",\"totalPages\":%" PRIuFAST64 ",\"faults\":%" PRIuFAST64
           ",\"faultsWaited\":%" PRIuFAST64 ",\"zeroPages\":%" PRIuFAST64 ",\"replacedPages\":%" PRIuFAST64
           ",\"damagedPages\":%" PRIuFAST64 ",\"droppedPages\":%" PRIuFAST64 ",\"forks\":%" PRIuFAST64
           ",\"fillUs\":%" PRIdFAST64 ",\"firstFaultUs\":%" PRIdFAST64 ",\"threads\":%d,\"exitedTasks\":%" PRIuFAST64
           ",\"remotePages\":%" PRIu64 ",\"waitP50Us\":%u,\"waitP99Us\":%u,\"waitMaxUs\":%u",
           atomic_load(&s_filled), atomic_load(&s_total), atomic_load(&s_faults), atomic_load(&s_faults_waited),
           atomic_load(&s_zero), atomic_load(&s_replaced), atomic_load(&s_damaged), atomic_load(&s_dropped),
           atomic_load(&s_forks), atomic_load(&s_fill_us),
           atomic_load(&s_first_fault_us) < 0 ? (int_fast64_t)0 : atomic_load(&s_first_fault_us), o_threads,
           atomic_load(&s_exited_tasks), s_remote, g_wait_p50, g_wait_p99, g_wait_max);
}

static void json_escape(const char *in, char *out, size_t len) {
  size_t o = 0;
  for (; *in && o + 7 < len; in++) {
    unsigned char c = (unsigned char)*in;
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20) {
      o += (size_t)snprintf(out + o, len - o, "\\u%04x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
}

static void write_status_as(const char *state, const char *reason, pid_t pid) {
  if (!o_status) return;
  char stats[1024], esc[600], json[2048], tmp[PATH_MAX];
  stats_json(stats, sizeof stats);
  json_escape(reason ? reason : "", esc, sizeof esc);
  int n = snprintf(json, sizeof json, "{\"state\":\"%s\",\"pid\":%d,\"guardianPid\":%d,\"reason\":\"%s\",%s}\n", state,
                   (int)pid, (int)g_guardian_pid, esc, stats);
  if (snprintf(tmp, sizeof tmp, "%s.tmp-%d", o_status, (int)getpid()) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    logmsg("status %s: %s", tmp, strerror(errno));
    return;
  }
  ssize_t w = write(fd, json, (size_t)n);
  close(fd);
  if (w != n || rename(tmp, o_status) < 0) {
    logmsg("status %s: %s", o_status, strerror(errno));
    unlink(tmp);
  }
}

static pid_t g_self_pid;
static void write_status(const char *state, const char *reason) { write_status_as(state, reason, g_self_pid); }

/* ---- killing the restored tree (pager on failure, guardian on the pager's death) ---- */
static int read_pidfile(void) {
  if (!o_pidfile) return -1;
  int fd = open(o_pidfile, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[32];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  long v = strtol(buf, NULL, 10);
  return v > 1 && v < INT_MAX ? (int)v : -1;
}

#define MAX_KILL 65536
static size_t list_tids(pid_t pid, long *out, size_t max) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return 0;
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    char *end;
    long v = strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && v > 0) out[n++] = v;
  }
  closedir(d);
  return n;
}

/* Stops each process of the tree as it is found (so none forks away), then kills them all. */
static int kill_tree(pid_t root) {
  pid_t *pids = malloc(sizeof(pid_t) * MAX_KILL);
  if (!pids) {
    kill(root, SIGKILL);
    return 1;
  }
  size_t n = 0;
  pids[n++] = root;
  kill(root, SIGSTOP);
  for (size_t i = 0; i < n; i++) {
    long tids[1024];
    size_t nt = list_tids(pids[i], tids, 1024);
    for (size_t k = 0; k < nt; k++) {
      char path[96], buf[4096];
      snprintf(path, sizeof path, "/proc/%d/task/%ld/children", (int)pids[i], tids[k]);
      int cfd = open(path, O_RDONLY | O_CLOEXEC);
      if (cfd < 0) continue;
      ssize_t len = read(cfd, buf, sizeof buf - 1);
      close(cfd);
      if (len <= 0) continue;
      buf[len] = '\0';
      char *s = buf;
      while (*s && n < MAX_KILL) {
        char *endp;
        long c = strtol(s, &endp, 10);
        if (endp == s) break;
        s = endp;
        if (c > 1) {
          kill((pid_t)c, SIGSTOP);
          pids[n++] = (pid_t)c;
        }
      }
    }
  }
  for (size_t k = 0; k < n; k++) kill(pids[k], SIGKILL);
  free(pids);
  return (int)n;
}

/*
 * Kills the restored tree: the root from the pid file, if it started after us (a recycled pid is not ours);
 * while the restore has not written it yet, criu's own tree (the tasks are its children until it detaches).
 */
static void kill_restored(const char *why) {
  for (int tries = 0; tries < 2; tries++) {
    int root = read_pidfile();
    if (root > 1) {
      unsigned long long st = proc_start_time(root);
      if (st != 0 && st >= g_start_time) {
        int n = kill_tree(root);
        logmsg("%s: killed the restored tree of pid %d (%d processes)", why, root, n);
      } else if (st != 0) {
        logmsg("%s: pid %d in %s started before the pager: not ours, left alone", why, root, o_pidfile);
      }
      return;
    }
    if (g_criu_pid > 1 && proc_start_time(g_criu_pid) >= g_start_time) {
      int n = kill_tree(g_criu_pid);
      logmsg("%s: no pid file yet; killed criu restore %d and its %d processes", why, (int)g_criu_pid, n - 1);
      return;
    }
    if (tries == 0) usleep(200 * 1000);
  }
  logmsg("%s: no restored tree to kill (no pid file %s, no criu connection)", why, o_pidfile ? o_pidfile : "-");
}

/* ---- guardian ---- */
static int send_fd(int sk, char tag, int fd, const void *extra, size_t extra_len) {
  char data[16];
  data[0] = tag;
  if (extra_len > sizeof data - 1) extra_len = sizeof data - 1;
  if (extra_len) memcpy(data + 1, extra, extra_len);
  struct iovec iov = {data, 1 + extra_len};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {0};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (fd >= 0) {
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t r = sendmsg(sk, &mh, MSG_NOSIGNAL);
    if (r >= 0) return 0;
    if (errno != EINTR) return -1;
  }
}

static void guardian_main(int sk) {
  prctl(PR_SET_NAME, "ferry-guardian");
  int *fds = NULL;
  size_t nfd = 0, cap = 0;
  for (;;) {
    char data[16];
    union {
      char buf[CMSG_SPACE(sizeof(int) * 4)];
      struct cmsghdr align;
    } u;
    struct iovec iov = {data, sizeof data};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    ssize_t r = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break; /* EOF: the pager is gone */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (nfd >= MAX_PROCS) {
          close(fd);
          continue;
        }
        grow((void **)&fds, &cap, nfd + 1, sizeof(int));
        fds[nfd++] = fd;
      }
    }
    if (data[0] == 'D') {
      for (size_t i = 0; i < nfd; i++) close(fds[i]);
      _exit(0);
    }
    if (data[0] == 'C' && r >= 5) memcpy(&g_criu_pid, data + 1, sizeof(int));
  }
  /* The pager died without saying done: the uffds we hold keep the task's missing pages trapping, so the copy
   * blocks instead of reading zeros; kill it before we let go of them. */
  kill_restored("pager died");
  write_status_as("failed", "pager died", g_self_pid);
  for (size_t i = 0; i < nfd; i++) close(fds[i]);
  _exit(0);
}

static int spawn_guardian(void) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
  pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return -1;
  }
  if (pid == 0) {
    close(sv[0]);
    setsid();
    /* Only the socket and the log: every other fd (the CRIU socket, the control socket, uffds) is dropped. */
    for (int fd = 3; fd < 65536; fd++)
      if (fd != sv[1] && fd != g_logfd) close(fd);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGTERM, SIG_IGN); /* the agent's abort goes to the pager, who kills the tree itself */
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    guardian_main(sv[1]);
  }
  close(sv[1]);
  g_guardian_sk = sv[0];
  g_guardian_pid = pid;
  /* Re-send every uffd the pager holds. */
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_nprocs; i++)
    if (g_procs[i]->uffd >= 0) send_fd(g_guardian_sk, 'F', g_procs[i]->uffd, NULL, 0);
  pthread_mutex_unlock(&g_mu);
  if (g_criu_pid > 0) send_fd(g_guardian_sk, 'C', -1, &g_criu_pid, sizeof g_criu_pid);
  return 0;
}

/* ---- plan ---- */
static int plan_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int plan_error(const char *fmt, ...) {
  char buf[400], reason[460];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  snprintf(reason, sizeof reason, "bad plan: %s", buf);
  logmsg("%s", reason);
  write_status("failed", reason);
  exit(2);
}

static uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t rd64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static void load_plan(void) {
  int fd = open(o_plan, O_RDONLY | O_CLOEXEC);
  if (fd < 0) plan_error("open %s: %s", o_plan, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) plan_error("%s is not a regular file", o_plan);
  if (st.st_size < 32) plan_error("%lld bytes: shorter than the header", (long long)st.st_size);
  g_plan_size = (size_t)st.st_size;
  g_plan = mmap(NULL, g_plan_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (g_plan == MAP_FAILED) plan_error("mmap: %s", strerror(errno));
  const uint8_t *p = g_plan;
  if (memcmp(p, PLAN_MAGIC, 8) != 0) plan_error("bad magic");
  if (rd32(p + 8) != PLAN_VERSION) plan_error("version %u, not %u", rd32(p + 8), PLAN_VERSION);
  if (rd32(p + 12) != (uint32_t)g_ps) plan_error("page size %u, this host's is %ld", rd32(p + 12), g_ps);
  g_nfiles = rd32(p + 16);
  g_ntasks = rd32(p + 20);
  if (g_nfiles > MAX_FILES) plan_error("%u files > %u", g_nfiles, MAX_FILES);
  if (g_ntasks > MAX_TASKS) plan_error("%u tasks > %u", g_ntasks, MAX_TASKS);
  if (rd64(p + 24) != 0) plan_error("reserved field not 0");
  size_t off = 32;
  g_files = xcalloc(g_nfiles, sizeof *g_files);
  for (uint32_t i = 0; i < g_nfiles; i++) {
    if (g_plan_size - off < 4) plan_error("file %u: truncated", i);
    uint32_t len = rd32(p + off);
    off += 4;
    if (len == 0 || len >= PATH_MAX || len > g_plan_size - off) plan_error("file %u: path length %u", i, len);
    char *path = xcalloc(len + 1, 1);
    memcpy(path, p + off, len);
    if (memchr(path, 0, len) || path[0] != '/') plan_error("file %u: not an absolute path without NUL", i);
    off += len;
    g_files[i].path = path;
    g_files[i].fd = -1;
  }
  size_t padded = (off + 7) & ~(size_t)7;
  if (padded > g_plan_size) plan_error("truncated after the files");
  for (; off < padded; off++)
    if (p[off] != 0) plan_error("padding after the files not zero");
  g_tasks = xcalloc(g_ntasks, sizeof *g_tasks);
  for (uint32_t t = 0; t < g_ntasks; t++) {
    struct ptask *tk = &g_tasks[t];
    if (g_plan_size - off < 16) plan_error("task %u: truncated header", t);
    tk->ns_pid = rd32(p + off);
    tk->n_ranges = rd32(p + off + 4);
    tk->n_pages = rd64(p + off + 8);
    off += 16;
    if (tk->ns_pid == 0 || tk->ns_pid > (uint32_t)INT_MAX) plan_error("task %u: pid %u", t, tk->ns_pid);
    for (uint32_t u = 0; u < t; u++)
      if (g_tasks[u].ns_pid == tk->ns_pid) plan_error("task %u: pid %u twice", t, tk->ns_pid);
    uint64_t left = g_plan_size - off;
    if (tk->n_ranges > left / 24) plan_error("task %u: %u ranges run past the end", t, tk->n_ranges);
    tk->ranges = (const struct plan_range *)(p + off);
    off += (size_t)tk->n_ranges * 24;
    left = g_plan_size - off;
    if (tk->n_pages > left / 32) plan_error("task %u: %" PRIu64 " pages run past the end", t, tk->n_pages);
    tk->pages = (const struct plan_page *)(p + off);
    off += (size_t)tk->n_pages * 16;
    tk->hashes = p + off;
    off += (size_t)tk->n_pages * 16;
    uint64_t prev_end = 0;
    for (uint32_t r = 0; r < tk->n_ranges; r++) {
      const struct plan_range *rg = &tk->ranges[r];
      if (rg->start % (uint64_t)g_ps) plan_error("task %u range %u: start not page aligned", t, r);
      if (rg->n_pages == 0 || rg->n_pages > tk->n_pages || rg->first_index > tk->n_pages - rg->n_pages)
        plan_error("task %u range %u: pages [%" PRIu64 ", +%" PRIu64 ") outside the %" PRIu64 " of the manifest", t, r,
                   rg->first_index, rg->n_pages, tk->n_pages);
      if (rg->n_pages > (UINT64_MAX - rg->start) / (uint64_t)g_ps) plan_error("task %u range %u: overflows", t, r);
      if (r > 0 && rg->start < prev_end) plan_error("task %u range %u: not ascending", t, r);
      prev_end = rg->start + rg->n_pages * (uint64_t)g_ps;
      tk->range_pages += rg->n_pages;
    }
    if (tk->range_pages > tk->n_pages) plan_error("task %u: ranges overlap in the manifest", t);
  }
  if (off != g_plan_size) plan_error("%zu bytes after the last task", g_plan_size - off);
  /* The store: every file mmapped read-only; each page's offset inside its file. */
  for (uint32_t i = 0; i < g_nfiles; i++) {
    int ffd = open(g_files[i].path, O_RDONLY | O_CLOEXEC);
    if (ffd < 0) plan_error("file %u %s: %s", i, g_files[i].path, strerror(errno));
    struct stat fs;
    if (fstat(ffd, &fs) < 0 || !S_ISREG(fs.st_mode)) plan_error("file %u %s: not a regular file", i, g_files[i].path);
    if ((uint64_t)fs.st_size % (uint64_t)g_ps) plan_error("file %u %s: size %lld not a page multiple", i, g_files[i].path, (long long)fs.st_size);
    g_files[i].fd = ffd;
    g_files[i].size = (uint64_t)fs.st_size;
    if (fs.st_size > 0) {
      g_files[i].map = mmap(NULL, (size_t)fs.st_size, PROT_READ, MAP_SHARED, ffd, 0);
      if (g_files[i].map == MAP_FAILED) plan_error("file %u: mmap: %s", i, strerror(errno));
    }
  }
  for (uint32_t t = 0; t < g_ntasks; t++) {
    struct ptask *tk = &g_tasks[t];
    for (uint64_t k = 0; k < tk->n_pages; k++) {
      const struct plan_page *pg = &tk->pages[k];
      if (pg->flags & ~PAGE_CONFIRMED) plan_error("task %u page %" PRIu64 ": unknown flags 0x%x", t, k, pg->flags);
      if (pg->file == ZERO_FILE) continue;
      if (pg->file == REMOTE_FILE) {
        if (pg->flags != 0) plan_error("task %u page %" PRIu64 ": a remote page marked confirmed", t, k);
        continue;
      }
      if (pg->file >= g_nfiles) plan_error("task %u page %" PRIu64 ": file %u of %u", t, k, pg->file, g_nfiles);
      uint64_t fsz = g_files[pg->file].size;
      if (fsz < (uint64_t)g_ps || pg->offset > fsz - (uint64_t)g_ps)
        plan_error("task %u page %" PRIu64 ": offset %" PRIu64 " past the end of %s", t, k, pg->offset, g_files[pg->file].path);
    }
    tk->pf = xcalloc(tk->n_pages, 1);
    for (uint64_t k = 0; k < tk->n_pages; k++) {
      if (tk->pages[k].flags & PAGE_CONFIRMED) tk->pf[k] = PF_CONFIRMED;
      if (tk->pages[k].file == REMOTE_FILE) {
        tk->pf[k] = PF_REMOTE;
        s_remote++;
      }
    }
    tk->spill_first = g_spill_pages;
    g_spill_pages += tk->n_pages;
  }
}

static uint8_t *spill_at(const struct ptask *t, uint64_t i) { return g_spill + (t->spill_first + i) * (uint64_t)g_ps; }

/*
 * The spill file for REPLACE bytes (see g_spill). Returns 0, or an errno; nothing is left on disk either way.
 * Before any socket exists: a failure here touches nothing.
 */
static int open_spill(char *path, size_t len) {
  const char *slash = strrchr(o_control, '/');
  int dirlen = slash ? (int)(slash - o_control) : 1;
  const char *dir = slash ? o_control : ".";
  if (slash == o_control) dirlen = 0; /* the control socket is in / */
  if (snprintf(path, len, "%.*s/replaced.pages", dirlen, dir) >= (int)len) return ENAMETOOLONG;
  if (g_spill_pages == 0) return 0;
  if (g_spill_pages > (uint64_t)INT64_MAX / (uint64_t)g_ps) return EFBIG;
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno;
  unlink(path);
  size_t bytes = (size_t)(g_spill_pages * (uint64_t)g_ps);
  int e = 0;
  if (ftruncate(fd, (off_t)bytes) < 0) e = errno;
  if (!e) {
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) e = errno;
    else g_spill = m;
  }
  close(fd);
  return e;
}

/* ---- pages: readiness and bytes ---- */
static bool page_ready(struct ptask *t, uint64_t i) {
  uint8_t f = atomic_load_explicit(&t->pf[i], memory_order_acquire);
  return (f & PF_REPLACED) || ((f & PF_CONFIRMED) && !(f & PF_DAMAGED));
}

static void queue_want(struct ptask *t, uint64_t idx, uint64_t n, uint32_t flags); /* takes g_mu */

static uint64_t t_index(struct ptask *t) { return (uint64_t)(t - g_tasks); }

/*
 * Copies page i's bytes into dst. Store pages are hashed and compared with the plan first: false when they do
 * not match (the page is marked damaged and a WANT with BYTES goes out).
 */
static bool page_bytes(struct ptask *t, uint64_t i, uint8_t *dst) {
  uint8_t f = atomic_load_explicit(&t->pf[i], memory_order_acquire);
  if (f & PF_REPLACED) {
    memcpy(dst, spill_at(t, i), (size_t)g_ps);
    return true;
  }
  if (f & PF_REMOTE) return false; /* never ready without its REPLACE (page_ready says so first) */
  const struct plan_page *pg = &t->pages[i];
  if (pg->file == ZERO_FILE) memset(dst, 0, (size_t)g_ps);
  else memcpy(dst, g_files[pg->file].map + pg->offset, (size_t)g_ps);
  XXH128_hash_t h = XXH3_128bits(dst, (size_t)g_ps);
  uint8_t hb[HASH_BYTES];
  memcpy(hb, &h.low64, 8);
  memcpy(hb + 8, &h.high64, 8);
  if (memcmp(hb, t->hashes + i * HASH_BYTES, HASH_BYTES) == 0) return true;
  uint8_t old = atomic_fetch_or(&t->pf[i], PF_DAMAGED);
  if (!(old & PF_DAMAGED)) {
    atomic_fetch_add(&s_damaged, 1);
    logmsg("task %u page %" PRIu64 ": the store's bytes do not match the plan's hash; asking for the source's bytes",
           t->ns_pid, i);
    queue_want(t, i, 1, WANT_BYTES_FLAG);
  }
  return false;
}

/* ---- processes ---- */
static struct range *find_range_addr(struct proc *p, uint64_t addr) {
  size_t lo = 0, hi = p->nr;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    struct range *r = &p->r[mid];
    if (addr < r->start) hi = mid;
    else if (addr >= r->start + r->n * (uint64_t)g_ps) lo = mid + 1;
    else return r;
  }
  return NULL;
}

static void mark_done(struct proc *p, uint64_t idx, int how) {
  uint8_t old = atomic_exchange(&p->st[idx], (uint8_t)how);
  if (old == ST_PENDING || old == ST_CLAIMED) {
    atomic_fetch_sub(&s_pending, 1);
    if (how == ST_FILLED) atomic_fetch_add(&s_filled, 1);
    else atomic_fetch_add(&s_dropped, 1);
  }
}

static void wake_main(void) {
  uint64_t one = 1;
  ssize_t w = write(g_wake_fd, &one, sizeof one);
  (void)w;
}

static void push_work(struct proc *p, uint64_t idx, uint64_t n) { /* g_mu held */
  if (g_qhead > 0 && g_qhead == g_qlen) g_qhead = g_qlen = 0;
  if (g_qlen == g_qcap && g_qhead > g_qcap / 2) {
    memmove(g_q, g_q + g_qhead, (g_qlen - g_qhead) * sizeof *g_q);
    g_qlen -= g_qhead;
    g_qhead = 0;
  }
  grow((void **)&g_q, &g_qcap, g_qlen + 1, sizeof *g_q);
  g_q[g_qlen++] = (struct work){p, idx, n};
  pthread_cond_signal(&g_cv);
}

static struct proc *new_proc(struct ptask *t, uint32_t pid, int uffd) {
  struct proc *p = xcalloc(1, sizeof *p);
  p->t = t;
  p->pid = pid;
  p->uffd = uffd;
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  /* Fill threads take it shared all the time: the event reader must not starve behind them. */
  pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&p->lock, &a);
  pthread_rwlockattr_destroy(&a);
  if (t) p->st = xcalloc(t->n_pages, 1);
  return p;
}

static void add_proc(struct proc *p) {
  pthread_mutex_lock(&g_mu);
  if (g_nprocs >= MAX_PROCS) {
    pthread_mutex_unlock(&g_mu);
    snprintf(g_fail_reason, sizeof g_fail_reason, "more than %d processes", MAX_PROCS);
    atomic_store(&g_failed, true);
    return;
  }
  static size_t cap;
  grow((void **)&g_procs, &cap, g_nprocs + 1, sizeof *g_procs);
  p->id = (int)g_nprocs;
  g_procs[g_nprocs++] = p;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  if (g_guardian_sk >= 0 && send_fd(g_guardian_sk, 'F', p->uffd, NULL, 0) < 0)
    logmsg("cannot hand uffd %d to the guardian: %s", p->uffd, strerror(errno));
}

/* ---- UFFDIO_COPY with the design's error rules. Returns 0, or -EAGAIN (retry later), -ESRCH (exited), or
 * -errno for a failure. `n` pages at dst from src; marks pages FILLED (or DROPPED) as it goes. ---- */
static int copy_run(struct proc *p, uint64_t dst, const uint8_t *src, uint64_t idx, uint64_t n) {
  uint64_t ps = (uint64_t)g_ps;
  while (n > 0) {
    struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)src, .len = n * ps, .mode = 0, .copy = 0};
    if (ioctl(p->uffd, UFFDIO_COPY, &c) == 0) {
      for (uint64_t k = 0; k < n; k++) mark_done(p, idx + k, ST_FILLED);
      return 0;
    }
    int e = errno;
    uint64_t done = c.copy > 0 ? (uint64_t)c.copy / ps : 0;
    for (uint64_t k = 0; k < done; k++) mark_done(p, idx + k, ST_FILLED);
    dst += done * ps, src += done * ps, idx += done, n -= done;
    if (n == 0) return 0;
    if (done > 0 && e == EAGAIN) continue; /* a partial copy: go on from where it stopped */
    switch (e) {
    case EEXIST: /* already there: the task's own page, count it filled */
      mark_done(p, idx, ST_FILLED);
      dst += ps, src += ps, idx++, n--;
      continue;
    case EAGAIN:
      return -EAGAIN;
    case ESRCH:
    case ENOSPC:
      return -ESRCH;
    case ENOENT:
    case EINVAL:
      if (n > 1) { /* a VMA edge (mprotect can split one): page by page */
        for (uint64_t k = 0; k < n; k++) {
          int rc = copy_run(p, dst + k * ps, src + k * ps, idx + k, 1);
          if (rc == -EAGAIN || rc == -ESRCH) return rc;
          if (rc < 0) return rc;
        }
        return 0;
      }
      if (e == ENOENT) { /* no VMA there any more: nothing to fill */
        mark_done(p, idx, ST_DROPPED);
        return 0;
      }
      return -e;
    default:
      return -e;
    }
  }
  return 0;
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
  if (atomic_exchange(&g_failed, true)) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_fail_reason, sizeof g_fail_reason, fmt, ap);
  va_end(ap);
  wake_main();
}

/* ---- the background fill ---- */
static bool take_work(struct work *w) { /* g_mu held */
  /* Before RSTF the restorer may not have registered every VMA yet: a copy there would fail (ENOENT). */
  if (!atomic_load(&g_restore_finished)) return false;
  while (g_qhead < g_qlen) {
    *w = g_q[g_qhead++];
    if (!atomic_load(&w->p->exited)) return true;
  }
  for (size_t i = 0; i < g_nprocs; i++) {
    struct proc *p = g_procs[i];
    if (!p->t || atomic_load(&p->exited) || p->cursor >= p->t->n_pages) continue;
    w->p = p;
    w->idx = p->cursor;
    w->n = p->t->n_pages - p->cursor < CHUNK_PAGES ? p->t->n_pages - p->cursor : CHUNK_PAGES;
    p->cursor += w->n;
    return true;
  }
  return false;
}

struct filler {
  pthread_t th;
  int k;
  uint8_t *buf;
};

/* Fills the pending, ready pages of [idx, idx+n) of p. Returns false when some must be retried (EAGAIN). */
static bool fill_item(struct proc *p, uint64_t idx, uint64_t n, uint8_t *buf) {
  struct ptask *t = p->t;
  bool again = false;
  uint64_t ps = (uint64_t)g_ps;
  pthread_rwlock_rdlock(&p->lock);
  for (size_t ri = 0; ri < p->nr && !atomic_load(&p->exited); ri++) {
    struct range r = p->r[ri];
    uint64_t lo = idx > r.first ? idx : r.first;
    uint64_t hi = idx + n < r.first + r.n ? idx + n : r.first + r.n;
    uint64_t k = lo;
    while (k < hi) {
      /* One run: consecutive pages we claim and whose bytes check out, copied with one ioctl. */
      uint64_t run = 0;
      while (k + run < hi) {
        uint64_t i = k + run;
        uint8_t exp = ST_PENDING;
        if (!page_ready(t, i) || !atomic_compare_exchange_strong(&p->st[i], &exp, ST_CLAIMED)) break;
        if (!page_bytes(t, i, buf + run * ps)) {
          atomic_store(&p->st[i], ST_PENDING);
          break;
        }
        run++;
      }
      if (run == 0) {
        k++;
        continue;
      }
      int rc = copy_run(p, r.start + (k - r.first) * ps, buf, k, run);
      if (rc == -EAGAIN) {
        for (uint64_t j = k; j < k + run; j++) {
          uint8_t exp = ST_CLAIMED;
          atomic_compare_exchange_strong(&p->st[j], &exp, ST_PENDING);
        }
        again = true;
      } else if (rc == -ESRCH) {
        for (uint64_t j = k; j < k + run; j++) {
          uint8_t exp = ST_CLAIMED;
          if (atomic_compare_exchange_strong(&p->st[j], &exp, ST_PENDING)) (void)0;
        }
        atomic_store(&p->exited, true);
        wake_main();
        break;
      } else if (rc < 0) {
        for (uint64_t j = k; j < k + run; j++) {
          uint8_t exp = ST_CLAIMED;
          atomic_compare_exchange_strong(&p->st[j], &exp, ST_PENDING);
        }
        fail("UFFDIO_COPY into pid %u at 0x%" PRIx64 ": %s", p->pid, r.start + (k - r.first) * ps, strerror(-rc));
        break;
      }
      k += run;
    }
  }
  pthread_rwlock_unlock(&p->lock);
  return !again;
}

static void note_fill_end(void) {
  if (atomic_load(&s_pending) == 0 && atomic_load(&g_restore_finished)) {
    atomic_store(&s_fill_us, us_since(&g_rstf_at));
    wake_main();
  }
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#define POPULATE_CHUNK (2u << 20)

/*
 * Until criu's RSTF the fill threads are idle: they map the store's pages into the pager's page tables
 * (MADV_POPULATE_READ, 2 MiB at a time, thread k taking every k-th chunk), so the fill's reads from the mmap do
 * not take a minor fault per page. It stops at RSTF; what is left faults in on demand. Not at mmap time
 * (MAP_POPULATE): the pager starts inside the freeze, and that would grow with the store.
 */
static void populate_store(int k) {
  uint64_t chunk = 0;
  for (uint32_t i = 0; i < g_nfiles; i++) {
    for (uint64_t off = 0; off < g_files[i].size; off += POPULATE_CHUNK, chunk++) {
      if (atomic_load(&g_restore_finished) || g_stop) return;
      if (chunk % (uint64_t)o_threads != (uint64_t)k) continue;
      uint64_t len = g_files[i].size - off < POPULATE_CHUNK ? g_files[i].size - off : POPULATE_CHUNK;
      if (madvise((void *)(g_files[i].map + off), (size_t)len, MADV_POPULATE_READ) < 0) return; /* best effort */
    }
  }
}

static void *filler_main(void *arg) {
  struct filler *f = arg;
  populate_store(f->k);
  for (;;) {
    struct work w;
    pthread_mutex_lock(&g_mu);
    while (!g_stop && !take_work(&w)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 100 * 1000000L;
      if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
      pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    bool stop = g_stop;
    pthread_mutex_unlock(&g_mu);
    if (stop) return NULL;
    if (!fill_item(w.p, w.idx, w.n, f->buf)) {
      /* The task's mm is changing (an event waits to be read): retry after the main thread has read it. */
      struct timespec d = {0, 500 * 1000};
      nanosleep(&d, NULL);
      pthread_mutex_lock(&g_mu);
      push_work(w.p, w.idx, w.n);
      pthread_mutex_unlock(&g_mu);
    }
    note_fill_end();
  }
}

/* ---- control connection ---- */
static int g_ctl_listen = -1, g_ctl = -1;
static uint8_t *g_in;
static size_t g_inlen;
static uint8_t *g_out;
static size_t g_outlen, g_outcap;
static int g_epoll;
#define IN_MAX (FRAME_HEADER + 64 * 4096 + 4096)

static void ctl_close(const char *why) {
  if (g_ctl < 0) return;
  logmsg("control connection closed: %s", why);
  epoll_ctl(g_epoll, EPOLL_CTL_DEL, g_ctl, NULL);
  close(g_ctl);
  g_ctl = -1;
  g_inlen = 0;
  g_outlen = 0;
}

static void ctl_flush(void) {
  while (g_ctl >= 0 && g_outlen > 0) {
    ssize_t w = send(g_ctl, g_out, g_outlen, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      ctl_close(strerror(errno));
      return;
    }
    memmove(g_out, g_out + w, g_outlen - (size_t)w);
    g_outlen -= (size_t)w;
  }
  if (g_ctl >= 0) {
    struct epoll_event ev = {.events = EPOLLIN | (g_outlen ? EPOLLOUT : 0), .data.u64 = 2};
    epoll_ctl(g_epoll, EPOLL_CTL_MOD, g_ctl, &ev);
  }
}

static void ctl_send(uint32_t type, uint32_t task, uint64_t idx, uint64_t count, uint32_t flags, const void *payload,
                     uint32_t plen) {
  if (g_ctl < 0) return;
  if (g_outlen + FRAME_HEADER + plen > OUTBUF_MAX) {
    ctl_close("the agent does not read (output buffer full)");
    return;
  }
  grow((void **)&g_out, &g_outcap, g_outlen + FRAME_HEADER + plen, 1);
  uint8_t *h = g_out + g_outlen;
  memcpy(h, &type, 4);
  memcpy(h + 4, &task, 4);
  memcpy(h + 8, &idx, 8);
  memcpy(h + 16, &count, 8);
  memcpy(h + 24, &flags, 4);
  memcpy(h + 28, &plen, 4);
  if (plen) memcpy(h + FRAME_HEADER, payload, plen);
  g_outlen += FRAME_HEADER + plen;
}

static void send_stats_frame(uint32_t type) {
  char stats[1024], json[1100];
  stats_json(stats, sizeof stats);
  int n = snprintf(json, sizeof json, "{%s}", stats);
  ctl_send(type, 0, 0, 0, 0, json, (uint32_t)n);
}

static bool want_answered(const struct want *w) {
  struct ptask *t = &g_tasks[w->task];
  for (uint64_t i = w->idx; i < w->idx + w->n; i++) {
    uint8_t f = atomic_load(&t->pf[i]);
    if (w->flags & WANT_BYTES_FLAG ? !(f & PF_REPLACED) : !page_ready(t, i)) return false;
  }
  return true;
}

/* Sends the wants not sent on this connection; drops answered ones. Main thread. */
static void flush_wants(void) {
  pthread_mutex_lock(&g_mu);
  size_t o = 0;
  for (size_t i = 0; i < g_nwants; i++) {
    if (want_answered(&g_wants[i])) {
      if (i < g_wsent) g_wsent--;
      continue;
    }
    g_wants[o++] = g_wants[i];
  }
  g_nwants = o;
  if (g_wsent > g_nwants) g_wsent = g_nwants;
  if (g_ctl >= 0) {
    for (; g_wsent < g_nwants; g_wsent++) {
      struct want *w = &g_wants[g_wsent];
      ctl_send(F_WANT, g_tasks[w->task].ns_pid, w->idx, w->n, w->flags, NULL, 0);
    }
  }
  pthread_mutex_unlock(&g_mu);
  ctl_flush();
}

static void queue_want(struct ptask *t, uint64_t idx, uint64_t n, uint32_t flags) {
  pthread_mutex_lock(&g_mu);
  grow((void **)&g_wants, &g_wcap, g_nwants + 1, sizeof *g_wants);
  g_wants[g_nwants++] = (struct want){(uint32_t)t_index(t), idx, n, flags};
  pthread_mutex_unlock(&g_mu);
  wake_main();
}

static void serve_waiters(struct proc *p);

static struct ptask *task_by_pid(uint32_t pid) {
  for (uint32_t i = 0; i < g_ntasks; i++)
    if (g_tasks[i].ns_pid == pid) return &g_tasks[i];
  return NULL;
}

/* A CONFIRM or REPLACE made pages [idx, idx+n) of t ready: waiting faults first, then the background. */
static void pages_ready(struct ptask *t, uint64_t idx, uint64_t n) {
  pthread_mutex_lock(&g_mu);
  size_t np = g_nprocs;
  struct proc **procs = xcalloc(np, sizeof *procs);
  if (np) memcpy(procs, g_procs, np * sizeof *procs); /* g_procs is NULL before criu's first task */
  pthread_mutex_unlock(&g_mu);
  for (size_t i = 0; i < np; i++) {
    struct proc *p = procs[i];
    if (p->t != t || atomic_load(&p->exited)) continue;
    if (p->nwait) {
      pthread_rwlock_wrlock(&p->lock);
      serve_waiters(p);
      pthread_rwlock_unlock(&p->lock);
    }
    pthread_mutex_lock(&g_mu);
    for (uint64_t k = idx; k < idx + n; k += CHUNK_PAGES) push_work(p, k, idx + n - k < CHUNK_PAGES ? idx + n - k : CHUNK_PAGES);
    pthread_mutex_unlock(&g_mu);
  }
  free(procs);
}

static int handle_frame(const uint8_t *h, const uint8_t *payload) {
  uint32_t type = rd32(h), task = rd32(h + 4), flags = rd32(h + 24), plen = rd32(h + 28);
  uint64_t idx = rd64(h + 8), count = rd64(h + 16);
  (void)flags;
  if (type != F_CONFIRM && type != F_REPLACE) return logmsg("control: unknown frame type %u", type), -1;
  struct ptask *t = task_by_pid(task);
  if (!t) return logmsg("control: frame %u for task %u, not in the plan", type, task), -1;
  if (count == 0 || count > t->n_pages || idx > t->n_pages - count)
    return logmsg("control: frame %u pages [%" PRIu64 ", +%" PRIu64 ") outside task %u's %" PRIu64, type, idx, count, task, t->n_pages), -1;
  if (type == F_CONFIRM) {
    if (plen != 0) return logmsg("control: CONFIRM with a payload"), -1;
    bool any = false;
    uint64_t remote = 0;
    pthread_mutex_lock(&g_mu);
    for (uint64_t i = idx; i < idx + count; i++) {
      /* The agent refuses a confirm of a remote page before it gets here: one is a bug, and the page waits on. */
      if (atomic_load(&t->pf[i]) & PF_REMOTE) {
        remote++;
        continue;
      }
      uint8_t old = atomic_fetch_or(&t->pf[i], PF_CONFIRMED);
      if (!(old & PF_CONFIRMED)) any = true;
    }
    pthread_mutex_unlock(&g_mu);
    if (remote)
      logmsg("control: CONFIRM of task %u pages [%" PRIu64 ", +%" PRIu64 ") covers %" PRIu64 " remote page(s): left unready (only a REPLACE serves them)",
             task, idx, count, remote);
    if (any) pages_ready(t, idx, count);
    return 0;
  }
  if (type == F_REPLACE) {
    if (count > 64 || (uint64_t)plen != count * (uint64_t)g_ps) return logmsg("control: REPLACE of %" PRIu64 " pages with %u bytes", count, plen), -1;
    pthread_mutex_lock(&g_mu);
    uint64_t fresh = 0;
    for (uint64_t i = idx; i < idx + count; i++) {
      /* Written once, before the flag: a reader that sees PF_REPLACED (acquire) sees these bytes, never others. */
      if (atomic_load(&t->pf[i]) & PF_REPLACED) continue;
      memcpy(spill_at(t, i), payload + (i - idx) * (uint64_t)g_ps, (size_t)g_ps);
      atomic_fetch_or_explicit(&t->pf[i], PF_REPLACED | PF_CONFIRMED, memory_order_release);
      fresh++;
    }
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add(&s_replaced, fresh);
    if (fresh) pages_ready(t, idx, count);
    return 0;
  }
  return -1;
}

static void ctl_read(void) {
  for (;;) {
    size_t want = g_inlen < FRAME_HEADER ? FRAME_HEADER - g_inlen : FRAME_HEADER + rd32(g_in + 28) - g_inlen;
    if (want == 0) {
      int rc = handle_frame(g_in, g_in + FRAME_HEADER);
      g_inlen = 0;
      if (rc < 0) {
        ctl_close("bad frame");
        return;
      }
      continue;
    }
    ssize_t r = recv(g_ctl, g_in + g_inlen, want, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) ctl_close(strerror(errno));
      return;
    }
    if (r == 0) {
      ctl_close("EOF");
      return;
    }
    g_inlen += (size_t)r;
    if (g_inlen == FRAME_HEADER && rd32(g_in + 28) > IN_MAX - FRAME_HEADER) {
      logmsg("control: payload of %u bytes exceeds the bound", rd32(g_in + 28));
      ctl_close("bad frame");
      return;
    }
  }
}

static void status_json_payload(char *out, size_t len, const char *state) {
  char stats[1024];
  stats_json(stats, sizeof stats);
  snprintf(out, len, "{\"state\":\"%s\",\"pid\":%d,\"guardianPid\":%d,\"reason\":\"\",%s}", state, (int)g_self_pid,
           (int)g_guardian_pid, stats);
}

static const char *g_state = "listening";

static void ctl_accept(void) {
  int fd = accept4(g_ctl_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  ctl_close("replaced by a new connection");
  g_ctl = fd;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 2};
  epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_ctl, &ev);
  char json[1400];
  status_json_payload(json, sizeof json, g_state);
  ctl_send(F_HELLO, 0, 0, 0, 0, json, (uint32_t)strlen(json));
  pthread_mutex_lock(&g_mu);
  g_wsent = 0; /* every open want again */
  pthread_mutex_unlock(&g_mu);
  flush_wants();
  logmsg("control connection accepted");
}

/* ---- faults and events (main thread, the process's lock held exclusively) ---- */
static uint8_t *g_fault_buf;
static bool g_any_retry;

static void zero_at(struct proc *p, uint64_t addr) {
  struct uffdio_zeropage z = {.range = {.start = addr, .len = (uint64_t)g_ps}, .mode = 0};
  if (ioctl(p->uffd, UFFDIO_ZEROPAGE, &z) == 0) {
    atomic_fetch_add(&s_zero, 1);
    return;
  }
  if (errno == EEXIST || errno == EAGAIN || errno == ENOENT) {
    struct uffdio_range w = {.start = addr, .len = (uint64_t)g_ps};
    ioctl(p->uffd, UFFDIO_WAKE, &w);
    return;
  }
  if (errno == ESRCH || errno == ENOSPC) {
    atomic_store(&p->exited, true);
    return;
  }
  fail("UFFDIO_ZEROPAGE in pid %u at 0x%" PRIx64 ": %s", p->pid, addr, strerror(errno));
}

static void add_waiter(struct proc *p, uint64_t idx, uint64_t addr, const struct timespec *since) {
  for (size_t i = 0; i < p->nwait; i++)
    if (p->wait[i].idx == idx) return;
  grow((void **)&p->wait, &p->wcap, p->nwait + 1, sizeof *p->wait);
  p->wait[p->nwait++] = (struct waiter){idx, addr, *since};
}

/* Serves the fault at addr. Returns true when resolved, false when it waits for a confirmation. */
static bool serve_fault(struct proc *p, uint64_t addr) {
  uint64_t ps = (uint64_t)g_ps;
  struct range *r = p->t ? find_range_addr(p, addr) : NULL;
  if (!r) {
    zero_at(p, addr); /* never present at the dump: a zero page, as the kernel would give */
    return true;
  }
  uint64_t idx = r->first + (addr - r->start) / ps;
  uint8_t st = atomic_load(&p->st[idx]);
  if (st == ST_FILLED) {
    struct uffdio_range w = {.start = addr, .len = ps};
    ioctl(p->uffd, UFFDIO_WAKE, &w);
    return true;
  }
  if (st == ST_DROPPED) {
    zero_at(p, addr);
    return true;
  }
  struct ptask *t = p->t;
  uint64_t end = r->first + r->n;
  uint64_t n = 0;
  while (idx + n < end && n < FAULT_CLUSTER && atomic_load(&p->st[idx + n]) == ST_PENDING && page_ready(t, idx + n)) {
    if (!page_bytes(t, idx + n, g_fault_buf + n * ps)) break;
    n++;
  }
  if (n > 0) {
    int rc = copy_run(p, addr, g_fault_buf, idx, n);
    if (rc == -ESRCH) atomic_store(&p->exited, true);
    else if (rc == -EAGAIN) {
      p->retry = true; /* the mm is changing: retried in a moment */
      g_any_retry = true;
      return false;
    }
    else if (rc < 0) fail("UFFDIO_COPY (fault) into pid %u at 0x%" PRIx64 ": %s", p->pid, addr, strerror(-rc));
    return rc != -EAGAIN;
  }
  /* Not ready: unconfirmed (ask for it and the unconfirmed pages after it) or damaged (asked already). */
  uint8_t f = atomic_load(&t->pf[idx]);
  if (!(f & PF_CONFIRMED) && !(f & PF_WANTED)) {
    uint64_t k = 0;
    pthread_mutex_lock(&g_mu);
    while (idx + k < end && k < WANT_CLUSTER) {
      uint8_t fk = atomic_load(&t->pf[idx + k]);
      if (fk & (PF_CONFIRMED | PF_WANTED)) break;
      atomic_fetch_or(&t->pf[idx + k], PF_WANTED);
      k++;
    }
    pthread_mutex_unlock(&g_mu);
    queue_want(t, idx, k, 0);
  }
  return false;
}

static void serve_waiters(struct proc *p) {
  size_t o = 0;
  for (size_t i = 0; i < p->nwait; i++) {
    struct waiter w = p->wait[i];
    uint8_t st = atomic_load(&p->st[w.idx]);
    bool done;
    if (st == ST_DROPPED) {
      zero_at(p, w.addr);
      done = true;
    } else {
      done = serve_fault(p, w.addr);
    }
    if (done) note_wait(&w.since);
    else p->wait[o++] = w;
  }
  p->nwait = o;
}

static void note_fault(void) {
  atomic_fetch_add(&s_faults, 1);
  int_fast64_t none = -1;
  int_fast64_t at = atomic_load(&g_restore_finished) ? us_since(&g_rstf_at) : 0;
  atomic_compare_exchange_strong(&s_first_fault_us, &none, at);
}

/* Splits ranges so that none straddles addr. */
static void split_at(struct proc *p, uint64_t addr) {
  struct range *r = find_range_addr(p, addr);
  if (!r || r->start == addr) return;
  uint64_t ps = (uint64_t)g_ps;
  size_t i = (size_t)(r - p->r);
  grow((void **)&p->r, &p->rcap, p->nr + 1, sizeof *p->r);
  r = &p->r[i];
  memmove(&p->r[i + 2], &p->r[i + 1], (p->nr - i - 1) * sizeof *p->r);
  uint64_t head = (addr - r->start) / ps;
  p->r[i + 1] = (struct range){addr, r->n - head, r->first + head};
  r->n = head;
  p->nr++;
}

static int cmp_range(const void *a, const void *b) {
  const struct range *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

/* UNMAP / REMOVE: pages in [start, end) are dropped, never filled afterwards. */
static void drop_span(struct proc *p, uint64_t start, uint64_t end) {
  if (!p->t) return;
  split_at(p, start);
  split_at(p, end);
  uint64_t ps = (uint64_t)g_ps;
  size_t o = 0;
  for (size_t i = 0; i < p->nr; i++) {
    struct range r = p->r[i];
    if (r.start >= start && r.start + r.n * ps <= end) {
      for (uint64_t k = 0; k < r.n; k++) mark_done(p, r.first + k, ST_DROPPED);
      continue;
    }
    p->r[o++] = r;
  }
  p->nr = o;
  /* A fault waiting there would wait for ever: it gets what the kernel would give, a zero page. */
  size_t w = 0;
  for (size_t i = 0; i < p->nwait; i++) {
    if (p->wait[i].addr >= start && p->wait[i].addr < end) {
      zero_at(p, p->wait[i].addr);
      note_wait(&p->wait[i].since);
    } else {
      p->wait[w++] = p->wait[i];
    }
  }
  p->nwait = w;
}

static void remap_span(struct proc *p, uint64_t from, uint64_t to, uint64_t len) {
  if (!p->t) return;
  split_at(p, from);
  split_at(p, from + len);
  for (size_t i = 0; i < p->nr; i++)
    if (p->r[i].start >= from && p->r[i].start < from + len) p->r[i].start = p->r[i].start - from + to;
  qsort(p->r, p->nr, sizeof *p->r, cmp_range);
  for (size_t i = 0; i < p->nwait; i++)
    if (p->wait[i].addr >= from && p->wait[i].addr < from + len) p->wait[i].addr = p->wait[i].addr - from + to;
}

static int g_epoll_uffd_base = 1000; /* epoll data: 1000 + proc id */

static void watch_proc(struct proc *p) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(g_epoll_uffd_base + p->id)};
  if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, p->uffd, &ev) < 0) fail("epoll add uffd: %s", strerror(errno));
}

static void handle_fork(struct proc *parent, int ufd) {
  struct proc *c = new_proc(parent->t, parent->pid, ufd);
  c->forked = true;
  int fl = fcntl(ufd, F_GETFL);
  fcntl(ufd, F_SETFL, fl | O_NONBLOCK);
  fcntl(ufd, F_SETFD, FD_CLOEXEC);
  uint64_t pending = 0;
  if (parent->t) {
    /* The child has what the parent had at the fork: its missing pages are the parent's pending ones. */
    c->r = xcalloc(parent->nr, sizeof *c->r);
    memcpy(c->r, parent->r, parent->nr * sizeof *c->r);
    c->nr = c->rcap = parent->nr;
    for (uint64_t i = 0; i < parent->t->n_pages; i++) {
      uint8_t s = atomic_load(&parent->st[i]);
      atomic_store(&c->st[i], s == ST_FILLED ? ST_FILLED : s);
      if (s == ST_PENDING) pending++;
    }
  }
  atomic_fetch_add(&s_pending, pending);
  atomic_fetch_add(&s_total, pending);
  atomic_fetch_add(&s_forks, 1);
  add_proc(c);
  watch_proc(c);
  logmsg("fork in pid %u: a child with uffd %d and %" PRIu64 " pages to fill", parent->pid, ufd, pending);
}

static void read_uffd(struct proc *p) {
  struct uffd_msg msgs[64];
  pthread_rwlock_wrlock(&p->lock);
  for (;;) {
    ssize_t n = read(p->uffd, msgs, sizeof msgs);
    struct timespec read_at;
    clock_gettime(CLOCK_MONOTONIC, &read_at);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) fail("read uffd of pid %u: %s", p->pid, strerror(errno));
      break;
    }
    if (n == 0) break;
    size_t k = (size_t)n / sizeof msgs[0];
    for (size_t i = 0; i < k; i++) {
      struct uffd_msg *m = &msgs[i];
      uint64_t ps = (uint64_t)g_ps;
      switch (m->event) {
      case UFFD_EVENT_PAGEFAULT: {
        note_fault();
        uint64_t addr = m->arg.pagefault.address & ~(ps - 1);
        if (!atomic_load(&g_restore_finished) && atomic_load(&s_faults) <= 64) {
          /* Before RSTF the task runs CRIU's restorer: these faults come from the restore itself. */
          struct range *fr = p->t ? find_range_addr(p, addr) : NULL;
          logmsg("fault before RSTF in pid %u at 0x%" PRIx64 " (%s%s)", p->pid, addr, fr ? "lazy page " : "outside the ranges",
                 fr ? (page_ready(p->t, fr->first + (addr - fr->start) / ps) ? "ready" : "not confirmed") : "");
        }
        if (!serve_fault(p, addr)) {
          struct range *r = find_range_addr(p, addr);
          if (r) {
            atomic_fetch_add(&s_faults_waited, 1);
            add_waiter(p, r->first + (addr - r->start) / ps, addr, &read_at);
          }
        }
        break;
      }
      case UFFD_EVENT_FORK:
        handle_fork(p, (int)m->arg.fork.ufd);
        break;
      case UFFD_EVENT_REMAP:
        remap_span(p, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
        break;
      case UFFD_EVENT_REMOVE:
      case UFFD_EVENT_UNMAP:
        drop_span(p, m->arg.remove.start, m->arg.remove.end);
        break;
      default:
        fail("unexpected uffd event %u from pid %u", m->event, p->pid);
      }
    }
    if ((size_t)n < sizeof msgs) break;
  }
  /* Faults that waited on an EAGAIN (the mm was changing) can go now. */
  if (p->nwait) serve_waiters(p);
  pthread_rwlock_unlock(&p->lock);
}

/*
 * Finds processes whose mm is gone although no ioctl told it yet: a copy killed while every page it still lacks
 * waits for the source (post-copy, the source lost) would otherwise keep the pager waiting for ever. UFFDIO_CONTINUE
 * checks the mm first (ESRCH once it is gone) and then refuses an anonymous range (EINVAL): it changes nothing.
 * Main thread, on the timer tick.
 */
static void probe_exited(void) {
  pthread_mutex_lock(&g_mu);
  size_t np = g_nprocs;
  pthread_mutex_unlock(&g_mu);
  for (size_t i = 0; i < np; i++) {
    struct proc *p = g_procs[i];
    if (atomic_load(&p->exited) || p->swept || p->nr == 0) continue;
    struct uffdio_continue c = {.range = {.start = p->r[0].start, .len = (uint64_t)g_ps}, .mode = UFFDIO_CONTINUE_MODE_DONTWAKE};
    if (ioctl(p->uffd, UFFDIO_CONTINUE, &c) < 0 && errno == ESRCH) atomic_store(&p->exited, true);
  }
}

/* A process whose mm is gone: its pending pages are done (dropped). */
static void sweep_exited(void) {
  pthread_mutex_lock(&g_mu);
  size_t np = g_nprocs;
  pthread_mutex_unlock(&g_mu);
  for (size_t i = 0; i < np; i++) {
    struct proc *p = g_procs[i];
    if (!atomic_load(&p->exited) || p->swept) continue;
    pthread_rwlock_wrlock(&p->lock);
    if (p->t)
      for (uint64_t k = 0; k < p->t->n_pages; k++) {
        uint8_t s = atomic_load(&p->st[k]);
        if (s == ST_PENDING) mark_done(p, k, ST_DROPPED);
      }
    p->nr = 0;
    p->nwait = 0;
    p->swept = true;
    if (!p->forked && p->t) atomic_fetch_add(&s_exited_tasks, 1);
    pthread_rwlock_unlock(&p->lock);
    epoll_ctl(g_epoll, EPOLL_CTL_DEL, p->uffd, NULL);
    logmsg("pid %u (uffd %d) exited", p->pid, p->uffd);
  }
}

/* ---- CRIU's connection ---- */
static int g_lazy_listen = -1, g_lazy = -1;
static uint8_t g_lz[4];
static size_t g_lzlen;
static bool g_lz_need_fd;
static int32_t g_lz_pid;

static void new_task_uffd(int32_t pid, int fd) {
  struct ptask *t = task_by_pid((uint32_t)pid);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  struct proc *p = new_proc(t, (uint32_t)pid, fd);
  uint64_t pending = 0;
  if (t) {
    if (t->seen) {
      fail("pid %d sent twice by criu", pid);
      return;
    }
    t->seen = true;
    p->nr = p->rcap = t->n_ranges;
    p->r = xcalloc(t->n_ranges, sizeof *p->r);
    for (uint32_t i = 0; i < t->n_ranges; i++) {
      p->r[i] = (struct range){t->ranges[i].start, t->ranges[i].n_pages, t->ranges[i].first_index};
      for (uint64_t k = 0; k < t->ranges[i].n_pages; k++) {
        uint64_t idx = t->ranges[i].first_index + k;
        if (atomic_load(&p->st[idx]) != ST_NONE) {
          fail("task %d: two ranges hold manifest page %" PRIu64, pid, idx);
          return;
        }
        atomic_store(&p->st[idx], ST_PENDING);
        pending++;
      }
    }
  } else {
    logmsg("pid %d is not in the plan: its faults get zero pages", pid);
  }
  atomic_fetch_add(&s_pending, pending);
  atomic_fetch_add(&s_total, pending);
  add_proc(p);
  watch_proc(p);
  logmsg("pid %d: uffd %d, %" PRIu64 " pages to fill", pid, fd, pending);
  if (strcmp(g_state, "listening") == 0) {
    g_state = "serving";
    write_status("serving", NULL);
  }
}

static void lazy_read(void) {
  for (;;) {
    if (g_lz_need_fd) {
      char b;
      struct iovec iov = {&b, 1};
      union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
      } u;
      struct msghdr mh = {0};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = u.buf;
      mh.msg_controllen = sizeof u.buf;
      ssize_t r = recvmsg(g_lazy, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (r <= 0) {
        fail("criu's connection ended inside a task message");
        return;
      }
      int fd = -1;
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
      if (fd < 0) {
        fail("criu sent pid %d without a uffd", g_lz_pid);
        return;
      }
      g_lz_need_fd = false;
      new_task_uffd(g_lz_pid, fd);
      continue;
    }
    ssize_t r = recv(g_lazy, g_lz + g_lzlen, 4 - g_lzlen, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
      epoll_ctl(g_epoll, EPOLL_CTL_DEL, g_lazy, NULL);
      close(g_lazy);
      g_lazy = -1;
      if (!atomic_load(&g_restore_finished)) fail("criu restore ended without finishing (no RSTF)");
      return;
    }
    g_lzlen += (size_t)r;
    if (g_lzlen < 4) continue;
    g_lzlen = 0;
    uint32_t v = rd32(g_lz);
    if (v == RSTF) {
      clock_gettime(CLOCK_MONOTONIC, &g_rstf_at);
      atomic_store(&g_restore_finished, true);
      logmsg("criu restore finished (RSTF); background fill starts");
      for (uint32_t i = 0; i < g_ntasks; i++)
        if (!g_tasks[i].seen && g_tasks[i].range_pages)
          logmsg("task %u of the plan got no uffd from criu (%" PRIu64 " pages not filled)", g_tasks[i].ns_pid, g_tasks[i].range_pages);
      pthread_mutex_lock(&g_mu);
      pthread_cond_broadcast(&g_cv);
      pthread_mutex_unlock(&g_mu);
      note_fill_end();
      continue;
    }
    g_lz_pid = (int32_t)v;
    if (g_lz_pid < 0) {
      logmsg("criu: zombie pid %d (no uffd)", -g_lz_pid);
      continue;
    }
    if (g_lz_pid == 0) {
      fail("criu sent pid 0");
      return;
    }
    g_lz_need_fd = true;
  }
}

static void lazy_accept(void) {
  int fd = accept4(g_lazy_listen, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  if (g_lazy >= 0) {
    logmsg("a second connection on the lazy-pages socket: refused");
    close(fd);
    return;
  }
  g_lazy = fd;
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
    g_criu_pid = cr.pid;
    if (g_guardian_sk >= 0) send_fd(g_guardian_sk, 'C', -1, &g_criu_pid, sizeof g_criu_pid);
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 4};
  epoll_ctl(g_epoll, EPOLL_CTL_ADD, fd, &ev);
  /* One restore per pager: nobody else connects. */
  epoll_ctl(g_epoll, EPOLL_CTL_DEL, g_lazy_listen, NULL);
  close(g_lazy_listen);
  g_lazy_listen = -1;
  unlink(o_socket);
  logmsg("criu restore %d connected", (int)g_criu_pid);
}

static int listen_unix(const char *path, bool via_tmp) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  char tmp[PATH_MAX];
  const char *bindpath = path;
  if (via_tmp) {
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
    bindpath = tmp;
  }
  if (strlen(bindpath) >= sizeof sa.sun_path) return -ENAMETOOLONG;
  strcpy(sa.sun_path, bindpath);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  unlink(bindpath);
  mode_t old = umask(0177);
  int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  umask(old);
  if (rc < 0 || listen(fd, 4) < 0 || (via_tmp && rename(tmp, path) < 0)) {
    int e = errno;
    close(fd);
    unlink(bindpath);
    return -e;
  }
  return fd;
}

/* A socket could not be made: nothing was touched yet (exit 2). */
static int listen_failed(const char *path, int err) {
  char r[PATH_MAX + 64];
  snprintf(r, sizeof r, "cannot listen on %s: %s", path, strerror(err));
  logmsg("%s", r);
  write_status("failed", r);
  if (g_guardian_sk >= 0) send_fd(g_guardian_sk, 'D', -1, NULL, 0);
  return 2;
}

/* ---- the end ---- */
static void finish(int code, const char *state, const char *reason) {
  pthread_mutex_lock(&g_mu);
  g_stop = true;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  if (code != 0) kill_restored(reason);
  wait_stats_update(true);
  write_status(state, reason);
  if (code == 0) send_stats_frame(F_DONE);
  else ctl_send(F_FAILED, 0, 0, 0, 0, reason, (uint32_t)strlen(reason));
  /* Bounded by time, not by tries (POLLOUT returns at once while a partial send leaves the rest queued): the agent
   * gets 5 s to read the last frames, a loaded host's event loop included. What it never read is logged. */
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += 5;
  while (g_ctl >= 0 && g_outlen > 0) {
    ctl_flush();
    if (g_outlen == 0 || g_ctl < 0) break;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec)) {
      logmsg("the agent did not read the last %zu bytes (the %s frame among them) within 5 s", (size_t)g_outlen, code == 0 ? "DONE" : "FAILED");
      break;
    }
    struct pollfd pf = {.fd = g_ctl, .events = POLLOUT};
    poll(&pf, 1, 20);
  }
  /* A graceful close: only our side ends, and we read on until the agent closes its own (within the same 5 s).
   * Closed at once, a CONFIRM the agent sends meanwhile fails with EPIPE, and Node then destroys its socket with
   * the DONE still unread in it (pager e2e (b) under load: "socket error: write EPIPE", no DONE). */
  if (g_ctl >= 0 && g_outlen == 0 && shutdown(g_ctl, SHUT_WR) == 0) {
    char sink[4096];
    for (;;) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      long left_ms = (until.tv_sec - now.tv_sec) * 1000 + (until.tv_nsec - now.tv_nsec) / 1000000;
      if (left_ms <= 0) break;
      struct pollfd pf = {.fd = g_ctl, .events = POLLIN};
      if (poll(&pf, 1, (int)(left_ms < 100 ? left_ms : 100)) < 0 && errno != EINTR) break;
      ssize_t r = recv(g_ctl, sink, sizeof sink, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
    }
  }
  if (g_guardian_sk >= 0) send_fd(g_guardian_sk, 'D', -1, NULL, 0);
  if (o_control) unlink(o_control);
  if (g_lazy_listen >= 0) unlink(o_socket);
  logmsg("exit %d (%s%s%s): filled %" PRIuFAST64 " of %" PRIuFAST64 " pages, %" PRIuFAST64 " dropped, %" PRIuFAST64
         " faults, fill %" PRIdFAST64 " us",
         code, state, reason ? ": " : "", reason ? reason : "", atomic_load(&s_filled), atomic_load(&s_total),
         atomic_load(&s_dropped), atomic_load(&s_faults), atomic_load(&s_fill_us));
  /* The uffds close with the process; every page is in (or the tree is dead). */
  _exit(code);
}

static void usage(const char *msg) {
  fprintf(stderr, "ferry_pager: %s\nusage: ferry_pager --plan FILE --socket PATH --control PATH --status FILE --pidfile FILE [--threads N] [--log FILE]\n", msg);
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"plan", required_argument, NULL, 'p'},    {"socket", required_argument, NULL, 's'},
      {"control", required_argument, NULL, 'c'}, {"status", required_argument, NULL, 't'},
      {"pidfile", required_argument, NULL, 'f'}, {"threads", required_argument, NULL, 'n'},
      {"log", required_argument, NULL, 'l'},     {NULL, 0, NULL, 0},
  };
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  o_threads = ncpu >= 2 ? 2 : 1;
  for (;;) {
    int c = getopt_long(argc, argv, "", opts, NULL);
    if (c == -1) break;
    switch (c) {
    case 'p': o_plan = optarg; break;
    case 's': o_socket = optarg; break;
    case 'c': o_control = optarg; break;
    case 't': o_status = optarg; break;
    case 'f': o_pidfile = optarg; break;
    case 'l': o_log = optarg; break;
    case 'n': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 1 || v > MAX_THREADS) usage("--threads must be 1..64");
      o_threads = (int)v;
      break;
    }
    default: usage("unknown option");
    }
  }
  if (optind != argc) usage("unexpected argument");
  if (!o_plan || !o_socket || !o_control || !o_status || !o_pidfile) usage("--plan, --socket, --control, --status and --pidfile are required");
  if (o_log) {
    int fd = open(o_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) usage("cannot open --log");
    g_logfd = fd;
  }
  g_self_pid = getpid();
  g_ps = sysconf(_SC_PAGESIZE);
  g_start_time = proc_start_time(getpid());
  clock_gettime(CLOCK_MONOTONIC, &g_t0);
  signal(SIGPIPE, SIG_IGN);
  {
    uint8_t *z = xcalloc(1, (size_t)g_ps);
    XXH128_hash_t h = XXH3_128bits(z, (size_t)g_ps);
    memcpy(g_zero_hash, &h.low64, 8);
    memcpy(g_zero_hash + 8, &h.high64, 8);
    free(z);
  }

  load_plan();
  {
    char spill[PATH_MAX];
    int e = open_spill(spill, sizeof spill);
    if (e) {
      char r[PATH_MAX + 64];
      snprintf(r, sizeof r, "cannot make the spill file %s: %s", spill, strerror(e));
      logmsg("%s", r);
      write_status("failed", r);
      return 2;
    }
  }

  /* Signals through a signalfd: SIGTERM aborts, SIGCHLD is the guardian's death. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGCHLD);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  g_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  g_epoll = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || g_wake_fd < 0 || tfd < 0 || g_epoll < 0) {
    logmsg("setup: %s", strerror(errno));
    write_status("failed", "setup failed");
    return 3;
  }
  if (spawn_guardian() < 0) {
    logmsg("guardian: %s", strerror(errno));
    write_status("failed", "cannot start the guardian");
    return 3;
  }

  g_in = xcalloc(IN_MAX, 1);
  g_fault_buf = aligned_alloc((size_t)g_ps, (size_t)g_ps * FAULT_CLUSTER);
  struct filler *fl = xcalloc((size_t)o_threads, sizeof *fl);
  for (int i = 0; i < o_threads; i++) {
    fl[i].k = i;
    fl[i].buf = aligned_alloc((size_t)g_ps, (size_t)g_ps * CHUNK_PAGES);
    if (!fl[i].buf || !g_fault_buf || pthread_create(&fl[i].th, NULL, filler_main, &fl[i]) != 0) {
      write_status("failed", "cannot start the fill threads");
      return 3;
    }
  }

  g_lazy_listen = listen_unix(o_socket, true);
  if (g_lazy_listen < 0) return listen_failed(o_socket, -g_lazy_listen);
  g_ctl_listen = listen_unix(o_control, false);
  if (g_ctl_listen < 0) {
    unlink(o_socket);
    return listen_failed(o_control, -g_ctl_listen);
  }
  struct epoll_event ev = {.events = EPOLLIN};
  ev.data.u64 = 1, epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_ctl_listen, &ev);
  ev.data.u64 = 3, epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_lazy_listen, &ev);
  ev.data.u64 = 5, epoll_ctl(g_epoll, EPOLL_CTL_ADD, sfd, &ev);
  ev.data.u64 = 6, epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_wake_fd, &ev);
  ev.data.u64 = 7, epoll_ctl(g_epoll, EPOLL_CTL_ADD, tfd, &ev);
  struct itimerspec its = {.it_interval = {0, 100 * 1000000L}, .it_value = {0, 100 * 1000000L}};
  timerfd_settime(tfd, 0, &its, NULL);
  write_status("listening", NULL);
  logmsg("listening on %s (control %s), %d fill threads, plan: %u tasks, %u files", o_socket, o_control, o_threads,
         g_ntasks, g_nfiles);

  uint64_t last_progress = UINT64_MAX;
  int ticks = 0;
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(g_epoll, evs, 64, g_any_retry ? 1 : 1000);
    if (n < 0 && errno != EINTR) {
      fail("epoll_wait: %s", strerror(errno));
      n = 0;
    }
    for (int i = 0; i < n; i++) {
      uint64_t d = evs[i].data.u64;
      if (d >= (uint64_t)g_epoll_uffd_base) {
        size_t id = (size_t)(d - (uint64_t)g_epoll_uffd_base);
        pthread_mutex_lock(&g_mu);
        struct proc *p = id < g_nprocs ? g_procs[id] : NULL;
        pthread_mutex_unlock(&g_mu);
        if (p) read_uffd(p);
      } else if (d == 1) {
        ctl_accept();
      } else if (d == 2) {
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ctl_read();
        if (g_ctl >= 0 && (evs[i].events & EPOLLOUT)) ctl_flush();
      } else if (d == 3) {
        lazy_accept();
      } else if (d == 4) {
        lazy_read();
      } else if (d == 5) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGCHLD) {
            int status;
            pid_t w;
            while ((w = waitpid(-1, &status, WNOHANG)) > 0) {
              if (w == g_guardian_pid) {
                logmsg("the guardian %d died; starting a new one", (int)w);
                close(g_guardian_sk);
                g_guardian_sk = -1;
                if (spawn_guardian() < 0) fail("cannot restart the guardian: %s", strerror(errno));
              }
            }
          } else {
            finish(4, "failed", si.ssi_signo == SIGTERM ? "aborted by SIGTERM" : "aborted by SIGINT");
          }
        }
      } else if (d == 6) {
        uint64_t v;
        ssize_t r = read(g_wake_fd, &v, sizeof v);
        (void)r;
      } else if (d == 7) {
        uint64_t v;
        ssize_t r = read(tfd, &v, sizeof v);
        (void)r;
        uint64_t filled = atomic_load(&s_filled) + atomic_load(&s_dropped) + atomic_load(&s_faults);
        if (filled != last_progress && g_ctl >= 0) {
          last_progress = filled;
          send_stats_frame(F_PROGRESS);
        }
        if (++ticks % 10 == 0 && strcmp(g_state, "serving") == 0) write_status("serving", NULL);
        if (ticks % 5 == 0) probe_exited();
      }
    }
    if (atomic_load(&g_failed)) finish(3, "failed", g_fail_reason);
    sweep_exited();
    flush_wants();
    /* Waiting faults whose copies hit EAGAIN (the mm was changing) are tried again. */
    if (g_any_retry) {
      g_any_retry = false;
      pthread_mutex_lock(&g_mu);
      size_t np = g_nprocs;
      pthread_mutex_unlock(&g_mu);
      for (size_t i = 0; i < np; i++) {
        struct proc *p = g_procs[i];
        if (!p->retry) continue;
        pthread_rwlock_wrlock(&p->lock);
        p->retry = false;
        serve_waiters(p);
        pthread_rwlock_unlock(&p->lock);
      }
    }
    if (atomic_load(&g_restore_finished) && atomic_load(&s_pending) == 0) {
      if (atomic_load(&s_fill_us) == 0) atomic_store(&s_fill_us, us_since(&g_rstf_at));
      g_state = "filled";
      finish(0, "filled", NULL);
    }
    ctl_flush();
  }
}
