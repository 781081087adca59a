import { EventEmitter } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { StreamIdle } from '../../dest-agent/stream-idle.js';
import { FerryError } from '../../shared/errors/ferry-error.js';

function codeOf(e: unknown): string | undefined {
  return e instanceof FerryError ? e.key : undefined;
}

describe('StreamIdle', () => {
  it('passes values through, bounds a silent wait, and ends every wait when the call ends', async () => {
    const call = new EventEmitter();
    const idle = new StreamIdle(30, 'precopy', call);
    expect(await idle.wait(Promise.resolve(7), 'message')).toBe(7);
    await expect(idle.wait(new Promise(() => undefined), 'message')).rejects.toSatisfy((e) => codeOf(e) === 'STREAM_IDLE_TIMEOUT');
    const pending = idle.wait(new Promise(() => undefined), 'message');
    call.emit('close');
    await expect(pending).rejects.toSatisfy((e) => codeOf(e) === 'CANCELLED');
    await expect(idle.wait(new Promise(() => undefined), 'message')).rejects.toSatisfy((e) => codeOf(e) === 'CANCELLED');
    expect(await idle.wait(Promise.resolve(1), 'message')).toBe(1); // what had settled still wins, as before
  });

  it('keeps nothing of an answered wait while the call lasts (a page stream held every batch it received)', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const call = new EventEmitter();
    const idle = new StreamIdle(10_000, 'precopy', call);
    let ref: WeakRef<object> | undefined;
    await (async () => {
      const batch = { data: Buffer.alloc(1 << 20) };
      ref = new WeakRef(batch);
      await idle.wait(Promise.resolve(batch), 'message');
    })();
    // WeakRefs are cleared only between tasks: a turn of the event loop, then collect.
    for (let i = 0; i < 3 && ref?.deref() !== undefined; i++) {
      await new Promise((r) => setTimeout(r, 10));
      gc();
    }
    expect(ref?.deref()).toBeUndefined();
    call.emit('close');
  });
});
