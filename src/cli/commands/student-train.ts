import { runStudentStage, studentStageOptions } from '../../distill/stage.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  description: 'train the SASRec student (full-softmax CE by default; optionally distilled from a teacher cache)',
  options: studentStageOptions,
  async run(opts, ctx) {
    const t0 = performance.now();
    const r = await runStudentStage(opts, { log: ctx.log, configFile: ctx.configFile });
    ctx.log(`student:train: wall clock ${((performance.now() - t0) / 1000).toFixed(1)}s (backend ${r.backend})`);
    return { ...r };
  },
});
