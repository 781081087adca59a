/** deleteJournaledOuterLink (outer-veth.ts): a link is deleted only when its name and ifindex are the journaled ones. */
import { describe, expect, it } from 'vitest';
import { deleteJournaledOuterLink } from '../../shared/kernel/outer-veth.js';
import type { Link } from '../../shared/kernel/rtnetlink.js';

const links = (): Link[] => [{ name: 'fy0123abcd', ifindex: 31 } as Link];

describe('the outer veth after a commit', () => {
  it('deleted when the name has the journaled ifindex; left when another link has the name now, or none was journaled', () => {
    const deleted: string[] = [];
    const del = (name: string): boolean => (deleted.push(name), true);
    expect(deleteJournaledOuterLink('fy0123abcd', 31, links, del)).toBe('deleted');
    expect(deleteJournaledOuterLink('fy0123abcd', 32, links, del)).toBe('another link');
    expect(deleteJournaledOuterLink('fy0123abcd', undefined, links, del)).toBe('unknown');
    expect(deleteJournaledOuterLink('fy99', 31, links, del)).toBe('gone');
    expect(deleted).toEqual(['fy0123abcd']);
  });
});
