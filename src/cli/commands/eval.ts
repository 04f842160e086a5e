import { evalOptions, runEvalStage } from '../../student/serving/eval-stage.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  description: 'full-ranking evaluation of a trained student (HR/NDCG@K, MRR), the sampled-100 protocol, and a popularity baseline',
  options: evalOptions,
  run: (opts, ctx) => runEvalStage(opts, { log: ctx.log }),
});
