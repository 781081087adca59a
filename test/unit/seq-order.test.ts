/** The dest's store order across page channels: batches by seq, each once, even while the due one is stored. */
import { describe, it } from 'vitest';
import { SeqOrder } from '../../dest-agent/page-channel/seq-order.js';
import { expectFerryRejection } from '../support/ferry-error-expect.js';

describe('SeqOrder', () => {
  it('lets each seq go in turn, and refuses one already stored, waiting, or being stored (another channel with the same seq)', async () => {
    const order = new SeqOrder();
    const signal = new AbortController().signal;
    await order.turn(1n, signal);
    // 1 is being stored: the same seq on another channel is refused, not stored a second time.
    await expectFerryRejection(order.turn(1n, signal), 'PAGE_SEQ_OUT_OF_ORDER');
    const third = order.turn(3n, signal);
    await expectFerryRejection(order.turn(3n, signal), 'PAGE_SEQ_OUT_OF_ORDER');
    order.done(1n);
    await order.turn(2n, signal);
    await expectFerryRejection(order.turn(2n, signal), 'PAGE_SEQ_OUT_OF_ORDER');
    order.done(2n);
    await third;
    order.done(3n);
    await expectFerryRejection(order.turn(2n, signal), 'PAGE_SEQ_OUT_OF_ORDER');
  });
});
