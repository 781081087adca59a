/** The names of CRIU's image files, as both agents recognise them (facts of CRIU's image directory layout). */

/** Any image name a peer may send: no path separator, no leading dot, bounded. */
export const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** `pages-<id>.img`: raw page data, in the order of its pagemap (the dest writes its own from its store). */
export const PAGES_IMAGE = /^pages-\d+\.img$/;

/** `pagemap-<pid>.img`: a task's pagemap, named by the task's pid in the root's pid namespace. */
export const TASK_PAGEMAP = /^pagemap-(\d+)\.img$/;

/** Any pagemap, the task ones and the others (shared memory: `pagemap-shmem-<id>.img`). */
export const ANY_PAGEMAP = /^pagemap-.+\.img$/;
