import { mergeOptions, runMergeStage } from '../../cache/merge-stage.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  description: 'join --shard i/N slices of a teacher cache, then fit the soft-label head and write soft labels',
  options: mergeOptions,
  run: (opts, ctx) => runMergeStage(opts, { log: ctx.log }),
});
