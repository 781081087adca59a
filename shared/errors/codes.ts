/**
 * The registry of every error Ferry reports. Codes are stable: tests and operators match on them, so a code
 * is never reused or renumbered. The first digit is the phase family:
 * 0 usage, 1 negotiate/preflight, 2 prepare, 3 precopy, 4 freeze, 5 final-delta, 6 restore, 7 commit,
 * 8 rollback, 9 internal. docs/errors.md is generated from this table (`npm run docs:errors`).
 */
import { status } from '@grpc/grpc-js';

export interface ErrorSpec {
  readonly code: string;
  /** One line: what happened, in the operator's words. */
  readonly title: string;
  /** Imperative: what the operator should do. */
  readonly hint: string;
  readonly retryable: boolean;
  /** How the error travels over gRPC. */
  readonly grpc: status;
}

const spec = (code: string, title: string, hint: string, grpc: status, retryable = false): ErrorSpec => ({
  code,
  title,
  hint,
  grpc,
  retryable,
});

export const ERRORS = {
  BAD_ARGUMENT: spec('FERRY-0001', 'A command-line argument is invalid', 'Run the command with --help and correct the argument.', status.INVALID_ARGUMENT),
  BAD_ADDRESS: spec('FERRY-0002', 'An address is not HOST:PORT', 'Give the address as HOST:PORT, e.g. 10.0.0.2:7070 or [::1]:7070.', status.INVALID_ARGUMENT),
  INSECURE_LISTEN_REFUSED: spec(
    'FERRY-0003',
    'A plaintext (--insecure) listener beyond loopback was refused',
    'Run with TLS (the default: see --tls-cert), or listen on 127.0.0.1; on an isolated test network only, add --insecure-any-address to --insecure.',
    status.INVALID_ARGUMENT,
  ),
  NOT_ROOT: spec('FERRY-0004', 'Ferry must run as root', 'Run the agent as root: CRIU and ptrace need CAP_SYS_ADMIN and CAP_SYS_PTRACE.', status.PERMISSION_DENIED),
  WORK_DIR_FOREIGN: spec(
    'FERRY-0005',
    'The work dir holds files Ferry did not make',
    'Give --work-dir an empty or new directory of its own (Ferry marks it with .ferry-work-dir); never a shared one such as /var/lib.',
    status.FAILED_PRECONDITION,
  ),
  METRICS_WILDCARD_REFUSED: spec(
    'FERRY-0006',
    'The metrics server refuses to listen on every interface',
    'Give --metrics one address (127.0.0.1:PORT, or the address your Prometheus scrapes), not 0.0.0.0 or [::].',
    status.INVALID_ARGUMENT,
  ),
  // The source agent's Unix socket and who may drive it (0020-0029).
  SOURCE_SOCKET_IN_USE: spec(
    'FERRY-0020',
    'Another source agent answers on this socket',
    'Stop the other agent (`systemctl stop ferry-source-agent`) or give this one another --socket PATH.',
    status.FAILED_PRECONDITION,
  ),
  SOURCE_SOCKET_UNSAFE: spec(
    'FERRY-0021',
    'The source agent will not use this socket path',
    'Give --socket a path in a directory owned by root and writable by root only; Ferry never removes a file that is not a socket.',
    status.FAILED_PRECONDITION,
  ),
  SOURCE_AGENT_UNREACHABLE: spec(
    'FERRY-0022',
    'No source agent answers on this socket',
    'Start the agent (`systemctl start ferry-source-agent`, or `ferry source-agent --socket PATH`) and give --via the path of its socket.',
    status.UNAVAILABLE,
    true,
  ),
  SOURCE_AGENT_ACCESS_DENIED: spec(
    'FERRY-0023',
    "You may not connect to the source agent's socket",
    "Run as root, or ask the operator to add your user to the agent's --socket-group (then log in again).",
    status.PERMISSION_DENIED,
  ),
  CALLER_NOT_PERMITTED: spec(
    'FERRY-0024',
    'You may not migrate this process',
    'Migrate a process tree of your own (every uid and gid of each of its processes yours), or ask root to.',
    status.PERMISSION_DENIED,
  ),
  DEST_NOT_ALLOWED: spec(
    'FERRY-0025',
    'The source agent does not migrate to this dest',
    "Name a dest on the agent's --allow-dest list, or ask its operator to add this HOST:PORT.",
    status.PERMISSION_DENIED,
  ),
  RESUME_NOTHING_TO_RESUME: spec(
    'FERRY-0026',
    'No journal of this migration on this host',
    'Give the migration id that `ferry migrate` printed (its "started" line), on the host it ran on, with the same FERRY_STATE_DIR; or `--resume all`.',
    status.NOT_FOUND,
  ),
  MIGRATION_IN_PROGRESS: spec(
    'FERRY-0027',
    'This migration is still running in another process',
    'Wait for it to end (it resolves itself); --resume is for a migration whose process died.',
    status.FAILED_PRECONDITION,
    true,
  ),
  // The agents' config file (0030-0039).
  CONFIG_INVALID: spec(
    'FERRY-0030',
    'The config file is invalid',
    "Correct the file (`ferry config check --config FILE` lists every problem); its keys are the flags' names in [dest-agent], [source-agent], [tls], [log], [paths] and [criu], as in deploy/ferry.toml.example.",
    status.INVALID_ARGUMENT,
  ),
  // The agents' logs (shared/logging/), checked when the logger is made: at an agent's start (0040-0049).
  LOG_LEVEL_INVALID: spec(
    'FERRY-0040',
    'FERRY_LOG_LEVEL (or the log level given) is not a log level',
    'Set FERRY_LOG_LEVEL to debug, info, warn, error or silent, or unset it (the agents then log at info).',
    status.INVALID_ARGUMENT,
  ),
  LOG_FORMAT_INVALID: spec(
    'FERRY-0041',
    'FERRY_LOG_FORMAT (or the log format given) is not a log format',
    'Set FERRY_LOG_FORMAT to json, text or auto (text on a terminal, JSON otherwise), or unset it (auto).',
    status.INVALID_ARGUMENT,
  ),

  // Installing the services (0050-0059): `ferry install-service`.
  SERVICE_FILE_EDITED: spec(
    'FERRY-0050',
    'A unit file install-service would replace was edited on this host',
    'Keep local changes in a drop-in (`systemctl edit UNIT`) or /etc/default/ferry; compare with `ferry install-service --dry-run`, then run it again with --force to replace the file.',
    status.FAILED_PRECONDITION,
  ),
  SERVICE_PATH_CONFLICT: spec(
    'FERRY-0051',
    'A path install-service must make a directory or a file is something else',
    'Move what is at that path (the detail names it) out of the way, then run `ferry install-service` again.',
    status.FAILED_PRECONDITION,
  ),
  // The runtime Ferry itself runs on (0060-0069).
  NODE_UNSUPPORTED: spec(
    'FERRY-0060',
    'Ferry does not run on this Node.js release',
    'Run Ferry with Node 22 or 24 (LTS): a distribution package, nodejs.org, or `bash scripts/provision-node.sh 24`, which prints the path of a private one.',
    status.FAILED_PRECONDITION,
  ),
  // `ferry run --net`: the task's network identity, checked before anything is made (0070-0079).
  NET_ADDRESS_TAKEN: spec(
    'FERRY-0070',
    'The address given to `ferry run --net` is in use on the bridge\'s segment',
    'Pick a free address (the detail names the MACs that answered its probe: ARP for IPv4, DAD for IPv6), or stop the station that holds it.',
    status.FAILED_PRECONDITION,
  ),
  NET_BRIDGE_NOT_BRIDGE: spec(
    'FERRY-0071',
    'The link named by `ferry run --bridge` exists and is not a bridge',
    'Name a bridge (`ip -d link show type bridge` lists them), or a free name: `ferry run --net` then creates the bridge.',
    status.FAILED_PRECONDITION,
  ),
  NET_SETUP_FAILED: spec(
    'FERRY-0072',
    'The task\'s network namespace could not be made',
    'The detail quotes the step that failed; whatever was made is removed. Check that iproute2 (`ip`) is installed and that Ferry runs as root.',
    status.INTERNAL,
  ),

  TASK_NOT_FOUND: spec('FERRY-1001', 'No process has this pid', 'Check the pid with `ps -p PID`; `ferry run -- CMD` prints the pid of a task it starts.', status.NOT_FOUND),
  TASK_IS_KERNEL_THREAD: spec('FERRY-1002', 'The pid is a kernel thread', 'Kernel threads cannot be migrated; pick a user process.', status.INVALID_ARGUMENT),
  TASK_IS_HOST_INIT: spec('FERRY-1003', 'The pid is the host init process', 'Migrate a task, not the host: start it with `ferry run -- CMD`.', status.INVALID_ARGUMENT),
  TASK_SESSION_OUTSIDE_TREE: spec(
    'FERRY-1004',
    'The task cannot be carried by CRIU: its session leader is outside the tree',
    'Start the task as its own session leader: `ferry run -- CMD` (or `setsid`).',
    status.FAILED_PRECONDITION,
  ),
  TASK_PIDS_TAKEN_ON_DEST: spec(
    'FERRY-1005',
    'The task is not a pid-namespace root and some of its pids are in use on the dest',
    'Start the task in its own pid namespace (`ferry run -- CMD`), so its pids cannot clash.',
    status.FAILED_PRECONDITION,
  ),
  DEST_UNREACHABLE: spec('FERRY-1006', 'The dest agent cannot be reached', 'Check that `ferry dest-agent` runs on the dest and that HOST:PORT is reachable from here.', status.UNAVAILABLE, true),
  DEST_NO_CRIU: spec('FERRY-1007', 'The dest has no working CRIU', 'On the dest, run `ferry setup` (it provisions CRIU >= 4.2 into /var/cache/ferry) or set FERRY_CRIU to a CRIU >= 4.2; `ferry check` says what is missing.', status.FAILED_PRECONDITION),
  PROTOCOL_MISMATCH: spec('FERRY-1008', 'The agents share no protocol version', 'Install the same Ferry release on both hosts.', status.FAILED_PRECONDITION),
  SOURCE_NO_CRIU: spec('FERRY-1009', 'The source has no working CRIU', 'Run `ferry setup` (it provisions CRIU >= 4.2 into /var/cache/ferry) or set FERRY_CRIU to a CRIU >= 4.2; `ferry check` says what is missing.', status.FAILED_PRECONDITION),
  TASK_STOPPED: spec('FERRY-1010', 'The task is stopped (job control or a debugger)', 'Resume it (`kill -CONT PID`) or detach the debugger, then migrate.', status.FAILED_PRECONDITION),
  PLATFORM_MISMATCH: spec('FERRY-1011', 'The hosts differ in architecture or page size', 'Migrate between hosts of the same architecture and page size.', status.FAILED_PRECONDITION),
  TASK_IS_FERRY: spec('FERRY-1012', 'The pid is Ferry itself or one of its ancestors', 'Migrate a task that Ferry does not depend on.', status.INVALID_ARGUMENT),
  TRACKER_UNAVAILABLE: spec(
    'FERRY-1014',
    'The requested dirty-page tracker cannot run on this host',
    'Run `ferry check` to see which trackers work here and why; use --tracker auto to take the best available.',
    status.FAILED_PRECONDITION,
  ),
  TASK_ALREADY_MIGRATING: spec(
    'FERRY-1015',
    'Another migration of this task (or of a process of its tree) is in progress on this host',
    'Wait for it to end (`ps -ef | grep "ferry migrate"`, or the source agent\'s log), then retry; one task migrates once at a time.',
    status.FAILED_PRECONDITION,
    true,
  ),
  IMAGES_DIR_UNSAFE: spec(
    'FERRY-1016',
    'The images directory is not private to this agent',
    'Remove it or name another with FERRY_IMAGES_DIR: it must be a real directory (no symlink) owned by the agent\'s user and writable by it alone.',
    status.FAILED_PRECONDITION,
  ),
  RESTORE_MODE_UNSUPPORTED: spec(
    'FERRY-1017',
    'The dest cannot restore lazily (no pager, or its kernel lacks userfaultfd with non-cooperative events)',
    'Run `ferry check --dest HOST:PORT`: it says why; use `--restore eager`, or rebuild the dest with `npm ci` (it builds the pager).',
    status.FAILED_PRECONDITION,
  ),
  POSTCOPY_UNSUPPORTED: spec(
    'FERRY-1018',
    'Post-copy needs a dest that restores lazily, and this one cannot',
    'Run `ferry check --to HOST:PORT`: it says why the dest cannot restore lazily; or migrate with `--post-copy off`.',
    status.FAILED_PRECONDITION,
  ),
  TCP_LOCK_UNAVAILABLE: spec(
    'FERRY-1019',
    'The task has established TCP connections, and no network-lock method works on the source or the dest',
    'Install CRIU built with nftables (Debian\'s criu 4.2 is; `ferry setup` provisions it) or iptables-restore on that host; or close the connections first (`--tcp-established off` does not help: the preflight then refuses a connected socket, FERRY-1203).',
    status.FAILED_PRECONDITION,
  ),
  CRIU_PROVISION_FAILED: spec(
    'FERRY-1020',
    '`ferry setup` could not provision CRIU on this host',
    'The detail quotes provision-criu.sh (not root, no Debian mirror in /etc/apt, not amd64, a download that failed): fix that and run `ferry setup` again, or install a CRIU >= 4.2 yourself and set FERRY_CRIU to it.',
    status.FAILED_PRECONDITION,
  ),
  COMPRESSION_UNAVAILABLE: spec(
    'FERRY-1025',
    '--compress zstd was asked for, and the source or the dest has no zstd codec',
    'Install libzstd1 on both hosts (Debian: `apt-get install libzstd1`), or use --compress auto (it compresses only where both agents can) or --compress off.',
    status.FAILED_PRECONDITION,
  ),
  TASK_TREE_CHANGING: spec('FERRY-1013', 'The task tree could not be read consistently', 'Retry; if the task forks constantly, migrate it while it is quieter.', status.UNAVAILABLE, true),

  // 12xx: the migratability preflight (source-agent/preflight/): what CRIU would refuse in the freeze or the
  // dest cannot provide, found before anything is touched (`ferry check PID`, and the first step of migrate).
  PREFLIGHT_CAPABILITIES: spec(
    'FERRY-1201',
    'This host\'s root lacks a capability CRIU needs to dump the task',
    'Run the agent with full root capabilities (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, CAP_SYS_PTRACE; CAP_SYS_RESOURCE for a task of another uid or one that changed its uids), e.g. outside a restricted container.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_FILE_LOCKS: spec(
    'FERRY-1202',
    'The task holds file locks and --file-locks is off',
    'Migrate with `--file-locks auto` (the default) or `on`: CRIU then dumps and restores the locks.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_TCP_CONNECTED: spec(
    'FERRY-1203',
    'The task has connected TCP sockets and --tcp-established is off',
    'Migrate with `--tcp-established auto` (CRIU repairs the connections; a network lock must work on both hosts), or close the connections first.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_LOCAL_ADDRESS: spec(
    'FERRY-1204',
    'The task has a socket bound to a local address the dest does not have',
    'Add the address to the dest (e.g. a floating IP moved with the task), bind the task to a wildcard address, or give the task its own network namespace (`ferry run`).',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_SYSV_IPC: spec(
    'FERRY-1205',
    'The task maps SysV shared memory of the host\'s IPC namespace',
    'Start the task in its own IPC namespace (`ferry run` with a private IPC namespace): CRIU carries SysV IPC only with its namespace.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_HUGE_PAGES: spec(
    'FERRY-1206',
    'The task maps huge pages (hugetlbfs or MAP_HUGETLB)',
    'Run the task without hugetlb mappings: Ferry\'s page plane moves 4 KiB pages (transparent huge pages are fine).',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_IO_URING: spec(
    'FERRY-1207',
    'The task holds an io_uring instance',
    'Migrate the task when it holds no io_uring fd (CRIU 4.2 cannot dump one), or make it fall back to plain syscalls.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_UPROBES: spec(
    'FERRY-1208',
    'The task has a uprobes area (a tracer attached user probes)',
    'Detach the tracer (bpftrace, perf probe, ...) that placed uprobes in the task, then migrate.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_DEVICE_MAPPING: spec(
    'FERRY-1209',
    'The task maps a device (a GPU or another character device)',
    'Migrate the task when it maps no device: CRIU carries only /dev/zero mappings without a device plugin.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_NSFS_HANDLE: spec(
    'FERRY-1210',
    'The task holds a handle on a namespace outside its tree',
    'Close the namespace fd (e.g. an `ip netns` handle) before migrating: CRIU can carry only namespaces the tree lives in.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_VFORK: spec(
    'FERRY-1211',
    'A task of the tree waits in vfork() for its child to exec or exit',
    'Migrate when the vfork child has exec()ed or exited: CRIU cannot dump two processes that share one memory.',
    status.FAILED_PRECONDITION,
    true,
  ),
  PREFLIGHT_ZOMBIE_THREADS: spec(
    'FERRY-1212',
    'A process of the tree is a zombie leader whose threads still run',
    'Migrate when its threads have exited (CRIU does not support zombies with threads), or make the leader thread stay alive.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_CPU_FEATURES: spec(
    'FERRY-1213',
    'The dest\'s CPU lacks feature flags the source\'s has',
    'Migrate to a dest with the same CPU features; or, if the task is known not to use the missing ones, override with `--allow cpu-features`.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_MOUNT_MISSING: spec(
    'FERRY-1214',
    'The task has its own mount namespace and a mount it took from the source host has no path on the dest',
    'Create the paths the message names on the dest (or mount the same file systems there), or start the task without `--mounts private`.',
    status.FAILED_PRECONDITION,
  ),
  // A task's own network identity (`ferry run --net`, docs/task-network.md).
  TASK_NETWORK_UNSUPPORTED: spec(
    'FERRY-1215',
    'The task has its own network namespace in a shape Ferry cannot move',
    'Start the task with `ferry run --net ADDRESS/PREFIX`: its namespace then holds lo and one veth whose other end is on a bridge of this host (the detail says what was found instead); or run it in the host\'s network namespace.',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_BRIDGE_MISSING: spec(
    'FERRY-1216',
    'The dest has no bridge for the task\'s network',
    'Create the bridge on the dest with its uplink enslaved (`ip link add BR type bridge`, `ip link set UPLINK master BR`, both up), or name the dest\'s bridge with `ferry dest-agent --bridge BR` (config: [dest-agent] bridge).',
    status.FAILED_PRECONDITION,
  ),
  PREFLIGHT_ADDRESS_IN_USE: spec(
    'FERRY-1217',
    'Another station on the dest\'s segment answers for an address of the task',
    'Free the address on the dest\'s segment (the detail names it and the MACs that answered its probe: ARP for IPv4, DAD for IPv6), or migrate to a dest on another segment.',
    status.FAILED_PRECONDITION,
  ),

  // 11xx: transport security (mutual TLS between the agents), checked before any migration call runs.
  TLS_FILES_MISSING: spec(
    'FERRY-1101',
    'A TLS certificate, key or CA file cannot be read',
    'Make them with `ferry certs init` and `ferry certs issue` (README, Security) and name them with --tls-cert, --tls-key and --tls-ca (default /etc/ferry/tls/{cert,key,ca}.pem, or $FERRY_TLS_DIR); only on loopback, --insecure runs without.',
    status.FAILED_PRECONDITION,
  ),
  TLS_CONFIG_INVALID: spec(
    'FERRY-1102',
    "This host's TLS certificate, key or CA cannot be used",
    'Issue a new certificate for this host with `ferry certs issue` (the detail says what is wrong with this one) from the CA named by --tls-ca.',
    status.FAILED_PRECONDITION,
  ),
  CERT_REFUSED_BY_PEER: spec(
    'FERRY-1103',
    "The peer refused this host's certificate: none was presented or its CA did not verify it",
    "Give this host a certificate issued by the peer's CA and valid now (`ferry certs issue`), named by --tls-cert and --tls-key.",
    status.UNAUTHENTICATED,
  ),
  PEER_NOT_ALLOWED: spec(
    'FERRY-1104',
    "The peer's identity is not on this agent's allow-list",
    "Add the peer's identity (spiffe://TRUST-DOMAIN/ferry/HOST, shown in the detail) with --allow-peer on the side that refused, or connect with the right certificate.",
    status.PERMISSION_DENIED,
  ),
  PEER_IDENTITY_INVALID: spec(
    'FERRY-1105',
    "The peer's certificate carries no usable identity",
    'Issue the peer a certificate with `ferry certs issue`: exactly one URI SAN spiffe://TRUST-DOMAIN/ferry/HOST (or, without a URI SAN, DNS names).',
    status.UNAUTHENTICATED,
  ),
  PEER_CERT_UNTRUSTED: spec(
    'FERRY-1106',
    "The peer's certificate did not verify against this host's CA",
    "Check that both hosts use certificates of the same CA (--tls-ca) and that the peer's certificate is valid now (`openssl x509 -noout -dates -in CERT`); renew it with `ferry certs issue`.",
    status.UNAUTHENTICATED,
  ),
  PEER_ADDRESS_MISMATCH: spec(
    'FERRY-1107',
    "The dest's certificate is not valid for the address dialed",
    'Dial the dest by a name or address its certificate carries (the detail lists them), or reissue it with `ferry certs issue --dns NAME --ip ADDRESS`.',
    status.UNAUTHENTICATED,
  ),
  TRANSPORT_MISMATCH: spec(
    'FERRY-1108',
    'One side speaks TLS and the other plaintext',
    'Run both sides with TLS (the default), or both with --insecure (loopback or isolated test networks only).',
    status.UNAVAILABLE,
  ),
  TLS_HANDSHAKE_FAILED: spec(
    'FERRY-1109',
    'The TLS handshake with the peer failed',
    'Check that HOST:PORT is a Ferry agent of the same release; the detail quotes the TLS error.',
    status.UNAVAILABLE,
  ),
  CERTIFICATE_ISSUE_FAILED: spec(
    'FERRY-1110',
    'openssl could not make the certificate',
    'Check that openssl is installed (`apt install openssl`) and that the directory is writable; the detail quotes openssl.',
    status.INTERNAL,
  ),

  DEST_PREPARE_FAILED: spec('FERRY-2001', 'The dest could not open a session', 'Check free disk and memory on the dest (the dest agent log says which).', status.RESOURCE_EXHAUSTED),
  SESSION_CONFLICT: spec('FERRY-2002', 'A migration with this id already exists on the dest', 'Retry: a new migration id is drawn each time.', status.ALREADY_EXISTS, true),
  SESSION_EPOCH_MISMATCH: spec(
    'FERRY-2003',
    "The call's epoch is not the one of the dest session",
    'Another source may be driving this migration id: check both agent logs; a retry draws a new id and epoch.',
    status.FAILED_PRECONDITION,
  ),
  DEST_TOO_MANY_SESSIONS: spec(
    'FERRY-2004',
    'The dest has as many open sessions as it allows (in all, or for this peer)',
    'Retry once running migrations end; idle sessions expire on their own (see the dest agent log).',
    status.RESOURCE_EXHAUSTED,
    true,
  ),

  MEMORY_READ_FAILED: spec('FERRY-3001', "The task's memory could not be read", 'Check that nothing else ptraces the task; see the detail for the failing call.', status.INTERNAL),
  PAGE_STREAM_FAILED: spec('FERRY-3002', 'The page stream to the dest broke', 'Check the dest agent and the network, then retry.', status.UNAVAILABLE, true),
  TASK_EXITED: spec('FERRY-3003', 'The task exited during the migration', 'Nothing to migrate any more; check why the task ended (its own log).', status.ABORTED),
  PAGE_INTEGRITY: spec('FERRY-3004', 'A page arrived at the dest with a wrong hash', 'Retry; if it repeats, check memory and network hardware on both hosts.', status.DATA_LOSS, true),
  UFFD_INJECTION_FAILED: spec(
    'FERRY-3006',
    'A userfaultfd could not be created inside the task',
    'Check that nothing else ptraces the task and that seccomp allows userfaultfd in it; or use --tracker hash.',
    status.FAILED_PRECONDITION,
  ),
  PRECOPY_NOT_CONVERGING: spec('FERRY-3005', 'Pre-copy did not converge', 'Raise --max-rounds or the bandwidth, or migrate when the task writes less.', status.ABORTED, true),
  PAGE_SEQ_OUT_OF_ORDER: spec(
    'FERRY-3007',
    'A page batch repeated or went back in its stream\'s sequence',
    'This is a bug or a tampered peer: keep both agent logs and report it.',
    status.INVALID_ARGUMENT,
  ),
  SESSION_QUOTA_EXCEEDED: spec(
    'FERRY-3008',
    'The migration sent the dest more than it announced at prepare',
    'Retry; if the task grew much since the migration began, retry when its memory is steadier.',
    status.RESOURCE_EXHAUSTED,
    true,
  ),
  PAGE_STORE_LIMIT: spec(
    'FERRY-3009',
    "The pages arrived in an order or spread the dest's store does not hold (too many levels or tasks)",
    'This is a bug or a tampered peer: a source sends each round in address order; keep both agent logs and report it.',
    status.RESOURCE_EXHAUSTED,
  ),
  PAGE_PAYLOAD_INVALID: spec(
    'FERRY-3020',
    "A page batch's payload could not be decoded: corrupt compressed bytes, a raw length that does not match its pages, or a codec the dest does not accept",
    'Retry; if it repeats, migrate with --compress off and keep both agent logs for a report.',
    status.INVALID_ARGUMENT,
    true,
  ),
  PAGE_CODEC_FAILED: spec(
    'FERRY-3021',
    'The zstd library failed or is missing on this host',
    'Check that libzstd.so.1 (Debian: libzstd1) is installed and loads; migrate with --compress off meanwhile.',
    status.INTERNAL,
  ),
  PAGE_CHANNEL_TOKEN_INVALID: spec(
    'FERRY-3010',
    "A page channel did not carry its session's channel token",
    'Retry the migration; if it repeats, something other than the source is dialing the dest\'s page-channel port: check the dest agent log.',
    status.PERMISSION_DENIED,
  ),
  PAGE_CHANNEL_FRAME_INVALID: spec(
    'FERRY-3011',
    'A page channel frame was malformed, out of place or over its bound',
    'This is a bug or a tampered peer: keep both agent logs and report it.',
    status.INVALID_ARGUMENT,
  ),

  CRIU_DUMP_FAILED: spec('FERRY-4001', 'criu dump failed; the task was resumed', 'Read the quoted CRIU errors and the dump log named in the detail.', status.FAILED_PRECONDITION),
  FREEZE_LEASE_EXPIRED: spec('FERRY-4002', 'The freeze lasted longer than its lease; the task was resumed', 'Raise --freeze-timeout or find the slow phase in the log.', status.DEADLINE_EXCEEDED, true),
  NETWORK_HOLD_FAILED: spec(
    'FERRY-4003',
    "The task's network namespace could not be held before the dump; the task was resumed",
    'The detail quotes the netlink error: check that the kernel has nf_tables (`modprobe nf_tables`) and that the source agent runs as root.',
    status.FAILED_PRECONDITION,
  ),
  TASK_NETWORK_CHANGED: spec(
    'FERRY-4004',
    "The task's network changed between Negotiate and the freeze; nothing was frozen or dumped",
    "Leave the task's links and addresses alone during a migration (the detail says what changed), then migrate again: the dest probes the addresses it is told at Negotiate.",
    status.FAILED_PRECONDITION,
    true,
  ),

  IMAGE_UPLOAD_FAILED: spec('FERRY-5001', 'CRIU images could not be sent to the dest', 'Check the dest agent and the network, then retry.', status.UNAVAILABLE, true),
  TRACKER_MISSED_PAGE: spec(
    'FERRY-5003',
    'A page changed that the tracker did not report; the migration was rolled back',
    'Keep the agent logs and report it; migrate with --tracker hash meanwhile.',
    status.DATA_LOSS,
  ),
  IMAGE_INVALID: spec('FERRY-5002', 'An image sent to the dest is invalid', 'This is a bug or a tampered peer: keep both agent logs and report it.', status.INVALID_ARGUMENT),

  REBUILD_PAGE_MISSING: spec('FERRY-6001', 'The dest lacks a page the dump needs', 'This is a bug: keep both agent logs and report it; the source was resumed.', status.DATA_LOSS),
  REBUILD_HASH_MISMATCH: spec('FERRY-6002', 'A page on the dest does not match its hash', 'Retry; if it repeats, check the dest disk under --work-dir.', status.DATA_LOSS, true),
  CRIU_RESTORE_FAILED: spec('FERRY-6003', 'criu restore failed on the dest; the source was resumed', 'Read the quoted CRIU errors and the restore log named in the detail.', status.FAILED_PRECONDITION),
  CRIU_RESTORE_TIMEOUT: spec('FERRY-6004', 'criu restore did not finish in time; the source was resumed', 'Raise --restore-timeout; a truncated pages image makes CRIU spin, so also check the dest log.', status.DEADLINE_EXCEEDED),
  PAGER_UNAVAILABLE: spec(
    'FERRY-6006',
    'Lazy restore is not possible on the dest: no pager binary or no userfaultfd',
    'Install Ferry again on the dest (the install builds build/Release/ferry_pager; `npm ci` in a checkout) and check `criu check --feature uffd-noncoop`; or migrate with --restore eager.',
    status.FAILED_PRECONDITION,
  ),
  TASK_BRIDGE_MISSING_ON_DEST: spec(
    'FERRY-6008',
    "The dest has no bridge to attach the task's veth to",
    'Create the bridge on the dest (`ip link add NAME type bridge`, its uplink enslaved to it) or start the dest agent with --bridge naming one; the source was resumed.',
    status.FAILED_PRECONDITION,
  ),
  TASK_NETWORK_NOT_HELD_ON_DEST: spec(
    'FERRY-6009',
    "The task's copy came back from criu restore without its network hold: it could answer before the commit",
    "Check that criu on both hosts dumps and restores a namespace's nftables ruleset (`criu check --feature nftables`); keep both agent logs and report it. The source was resumed.",
    status.FAILED_PRECONDITION,
  ),
  MOUNT_MISSING_ON_DEST: spec(
    'FERRY-6007',
    "The task has its own mount namespace and a mount it took from the source host has no path on the dest",
    'Create the path the detail names on the dest (or mount the same file system there), or start the task without `--mounts private`; the source was resumed.',
    status.FAILED_PRECONDITION,
  ),

  COMMIT_UNCONFIRMED: spec(
    'FERRY-7001',
    'The dest did not confirm the commit: the task may be running on the dest or frozen on the source',
    'Make the dest reachable and run the `ferry migrate --resume ID` the detail names (a source agent daemon does it on its own); resume nothing by hand.',
    status.UNKNOWN,
  ),
  COMMIT_REJECTED: spec('FERRY-7002', 'The dest no longer holds the restored task', 'The source was resumed; retry the migration.', status.FAILED_PRECONDITION, true),
  COMMIT_UNDELIVERED: spec(
    'FERRY-7003',
    'The dest could not be reached to commit; the task was resumed on the source',
    'Check the dest agent and the network, then retry; the dest removes its stopped copy on its own.',
    status.UNAVAILABLE,
    true,
  ),
  MIGRATION_UNRESOLVED: spec(
    'FERRY-7004',
    'A migration interrupted at its commit is not resolved yet: the original is frozen here until the dest answers',
    'Make the dest agent reachable, then run `ferry migrate --resume ID` (a source agent daemon keeps trying on its own).',
    status.UNAVAILABLE,
    true,
  ),
  FILL_FAILED: spec(
    'FERRY-7005',
    "The dest's pager failed before every page was in the restored copy: the copy was killed and the original resumed",
    'The dest agent log and the pager log in its work dir say why; what the copy did after its resume is lost. Retry the migration (or use `--restore eager`).',
    status.ABORTED,
    true,
  ),
  ORIGINAL_LOST: spec(
    'FERRY-7006',
    'The frozen original is gone before the dest held every page: the copy on the dest waits on pages that exist nowhere now',
    'Kill that copy on the dest (`kill -9 PID`, the detail names it) and restart the task from its own persistent state: this migration cannot be completed.',
    status.DATA_LOSS,
  ),

  INTERNAL: spec('FERRY-9001', 'Internal error', 'This is a bug: keep the agent log and report it.', status.INTERNAL),
  CANCELLED: spec('FERRY-9002', 'The migration was interrupted and rolled back', 'Run the command again when ready.', status.CANCELLED, true),
  SESSION_NOT_FOUND: spec('FERRY-9003', 'The dest has no session with this migration id', 'The dest agent may have restarted; retry the migration.', status.NOT_FOUND, true),
  NATIVE_UNAVAILABLE: spec('FERRY-9004', "Ferry's native addon is not built", 'Install Ferry again on this host (`npm install -g ferry-VERSION.tgz` builds the addon; it needs gcc, make, python3 and libxxhash-dev), or run `npm ci` in a checkout.', status.FAILED_PRECONDITION),
  REQUEST_INVALID: spec(
    'FERRY-9005',
    "A peer's request is malformed or exceeds one of the agent's bounds",
    'This is a bug or a tampered peer: keep both agent logs and report it (the detail names the field and its bound).',
    status.INVALID_ARGUMENT,
  ),
  DEST_TOO_MANY_STREAMS: spec(
    'FERRY-9006',
    'The dest has as many open streams as it allows (in all, or for this peer)',
    'Retry once running migrations end; idle streams are closed on their own.',
    status.RESOURCE_EXHAUSTED,
    true,
  ),
  SOURCE_AGENT_LOST: spec(
    'FERRY-9009',
    'The source agent went away during the migration: its outcome is not known here',
    'Restart the source agent: it finishes the migration from its journal (or run the `ferry migrate --resume ID` the detail names).',
    status.UNAVAILABLE,
  ),
  JOURNAL_UNREADABLE: spec(
    'FERRY-9008',
    'A migration journal is damaged or not Ferry\'s',
    'Keep the file named in the detail for the report; check the disk under the state dir. The migration it describes must be checked by hand.',
    status.DATA_LOSS,
  ),
  STREAM_IDLE_TIMEOUT: spec(
    'FERRY-9007',
    'A stream to the dest stayed idle longer than the dest allows',
    'Check the source agent and the network; retry the migration.',
    status.DEADLINE_EXCEEDED,
    true,
  ),
} as const satisfies Record<string, ErrorSpec>;

export type ErrorKey = keyof typeof ERRORS;

/**
 * Codes that were published and then withdrawn: never given to another error. FERRY-8001 (ROLLBACK_FAILED)
 * was never raised: a failed undo step is attached to the first cause, which keeps its own code, and the
 * source state `unknown` (exit 3) tells the operator to check the task.
 */
export const RETIRED_CODES: readonly string[] = ['FERRY-8001'];

const byCode = new Map<string, ErrorKey>(Object.entries(ERRORS).map(([key, s]) => [s.code, key as ErrorKey]));

export function keyForCode(code: string): ErrorKey | undefined {
  return byCode.get(code);
}
