/** Reading a criu command line: which program is criu, and which images dir it names (exactly). */
import { describe, expect, it } from 'vitest';
import { criuArguments, criuImagesDir } from '../../shared/criu/criu-processes.js';

const LOADER = '/var/cache/ferry/criu-forky/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2';

describe('criu command lines', () => {
  it("finds criu's arguments after criu itself, or after the criu a dynamic loader runs", () => {
    expect(criuArguments(['/usr/sbin/criu', 'restore', '-D', '/d'])).toEqual(['restore', '-D', '/d']);
    expect(criuArguments(['criu', 'dump'])).toEqual(['dump']);
    expect(criuArguments([LOADER, '--library-path', '/r/usr/lib:/r/lib', '/r/usr/sbin/criu', 'dump', '-D', '/d'])).toEqual(['dump', '-D', '/d']);
  });

  it('is not fooled by other programs that mention criu or its dir', () => {
    expect(criuArguments(['/bin/sh', '-c', 'x', 'ferry-criu', '123', '/usr/sbin/criu', 'dump', '-D', '/d'])).toBeUndefined();
    expect(criuArguments(['/usr/bin/setpriv', '--pdeathsig', 'KILL', '--', '/usr/sbin/criu', 'dump'])).toBeUndefined();
    expect(criuArguments(['/usr/bin/criu-ns', 'dump'])).toBeUndefined();
    expect(criuArguments([LOADER, '/usr/bin/python3'])).toBeUndefined();
    expect(criuArguments([])).toBeUndefined();
  });

  it('reads -D, --images-dir and --images-dir=', () => {
    expect(criuImagesDir(['dump', '-t', '1', '-D', '/a/b', '-o', '/a/b/x.log'])).toBe('/a/b');
    expect(criuImagesDir(['restore', '--images-dir', '/a/b'])).toBe('/a/b');
    expect(criuImagesDir(['restore', '--images-dir=/a/b'])).toBe('/a/b');
    expect(criuImagesDir(['restore', '-o', '/a/b/x.log'])).toBeUndefined();
    expect(criuImagesDir(['restore', '-D'])).toBeUndefined();
  });
});
