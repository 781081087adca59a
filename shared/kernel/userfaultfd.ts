/**
 * userfaultfd(2) ioctls, for write-protect tracking in async mode (UFFD_FEATURE_WP_ASYNC, Linux >= 6.7).
 *
 * A uffd acts on the mm of the process that created it, whoever holds the fd: the tracker gets a target's uffd
 * with pidfd_getfd and registers the target's ranges from the agent.
 *
 * Values from the uapi linux/userfaultfd.h. The ioctl numbers were checked against gcc with Debian 12's header
 * (_IOWR(0xAA, 0x3F, 24 B) = 0xc018aa3f, _IOWR(0xAA, 0x00, 32 B) = 0xc020aa00, _IOR(0xAA, 0x01, 16 B) =
 * 0x8010aa01); the feature bits, which that 6.1 header lacks, against the kernel's uapi header (6.7+).
 */
import { ioctlPointer } from '../native/libc.js';
import { PAGE_SIZE } from './page-size.js';
import { pageAddressHi, pageAddressLo } from './proc-maps.js';

export const UFFD_API = 0xaa;
export const UFFDIO_API = 0xc018aa3f;
export const UFFDIO_REGISTER = 0xc020aa00;
export const UFFDIO_UNREGISTER = 0x8010aa01;
export const UFFDIO_REGISTER_MODE_WP = 2;

/** userfaultfd() flags: O_CLOEXEC, O_NONBLOCK (x86_64 values) and UFFD_USER_MODE_ONLY. */
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const UFFD_USER_MODE_ONLY = 1;

export const UFFD_FEATURE_WP_UNPOPULATED = 1 << 13;
export const UFFD_FEATURE_WP_ASYNC = 1 << 15;

const API_BYTES = 24; // struct uffdio_api { u64 api, features, ioctls; }
const REGISTER_BYTES = 32; // struct uffdio_register { struct uffdio_range { u64 start, len; } range; u64 mode, ioctls; }
const RANGE_BYTES = 16;

/**
 * UFFDIO_API on a fresh uffd, asking for `features` (the kernel refuses the call with EINVAL when it lacks one).
 * Returns the features the kernel offers, as a number (all bits known today are below 2^32).
 */
export function uffdApi(fd: number, features: number): number {
  const arg = Buffer.alloc(API_BYTES);
  arg.writeUInt32LE(UFFD_API, 0);
  arg.writeUInt32LE(features >>> 0, 8);
  ioctlPointer(fd, UFFDIO_API, arg, 'UFFDIO_API');
  return arg.readUInt32LE(8);
}

function writeRange(arg: Buffer, startPage: number, endPage: number): void {
  arg.writeUInt32LE(pageAddressLo(startPage), 0);
  arg.writeUInt32LE(pageAddressHi(startPage), 4);
  // A length in bytes stays below 2^57: exact as a number.
  const len = (endPage - startPage) * PAGE_SIZE;
  arg.writeUInt32LE(len % 2 ** 32, 8);
  arg.writeUInt32LE(Math.floor(len / 2 ** 32), 12);
}

/** UFFDIO_REGISTER(MODE_WP) of pages [startPage, endPage). Registering a range again with the same uffd is a no-op. */
export function uffdRegisterWp(fd: number, startPage: number, endPage: number): void {
  const arg = Buffer.alloc(REGISTER_BYTES);
  writeRange(arg, startPage, endPage);
  arg.writeUInt32LE(UFFDIO_REGISTER_MODE_WP, 16);
  ioctlPointer(fd, UFFDIO_REGISTER, arg, 'UFFDIO_REGISTER');
}

/** UFFDIO_UNREGISTER of pages [startPage, endPage): clears the registration and the write-protect bits. */
export function uffdUnregister(fd: number, startPage: number, endPage: number): void {
  const arg = Buffer.alloc(RANGE_BYTES);
  writeRange(arg, startPage, endPage);
  ioctlPointer(fd, UFFDIO_UNREGISTER, arg, 'UFFDIO_UNREGISTER');
}
