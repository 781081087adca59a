/**
 * Huge pages (hugetlbfs files, MAP_HUGETLB anonymous memory: smaps KernelPageSize above the base page). CRIU 4.2
 * dumps them (criu/proc_parse.c, is_hugetlb_dev), but Ferry's page plane tracks, reads and sends base pages:
 * refused as a Ferry limit. Transparent huge pages have the base KernelPageSize in smaps and are carried.
 */
import { ok, refuse, some, type PreflightCheck } from './preflight-check.js';

export const hugePagesCheck: PreflightCheck = {
  name: 'huge-pages',
  key: 'PREFLIGHT_HUGE_PAGES',
  overridable: false,
  run({ tree }) {
    const areas = tree.tasks.flatMap((t) => t.hugeAreas.map((a) => `pid ${t.pid} 0x${a.start} ${a.kernelPageKb} kB pages ${a.path || '(anonymous)'}`));
    return areas.length > 0 ? refuse(`${areas.length} huge-page area(s): ${some(areas)}`) : ok('no huge-page areas');
  },
};
