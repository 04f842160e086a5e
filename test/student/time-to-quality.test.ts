import { describe, expect, it } from 'vitest';
import { timeToQuality } from '../../src/student/training/finish.js';

describe('timeToQuality', () => {
  it('the summed epoch time at the first epoch reaching each level; null when never reached; epochs without validation count their time', () => {
    const history = [
      { epoch: 1, epochSeconds: 10, valid: { 'ndcg@10': 0.05 } },
      { epoch: 2, epochSeconds: 12, valid: { 'ndcg@10': 0.091 } },
      { epoch: 3, epochSeconds: 11 }, // --eval-every 2: no validation
      { epoch: 4, epochSeconds: 9.5, valid: { 'ndcg@10': 0.0899 } }, // a dip does not move the first crossing
      { epoch: 5, epochSeconds: 10, valid: { 'ndcg@10': 0.1 } },
    ];
    expect(timeToQuality(history, [0.05, 0.09, 0.1, 0.11])).toEqual({
      '0.05': { seconds: 10, epoch: 1 },
      '0.09': { seconds: 22, epoch: 2 },
      '0.1': { seconds: 52.5, epoch: 5 },
      '0.11': null,
    });
  });
});
