import { defineOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { loadRecommender, RUNTIMES, type Recommendation, type Runtime } from '../../serve/recommender.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder', required: true },
  history: { type: 'string', help: 'the user\'s items, oldest first, as the dataset\'s own ids, comma-separated (e.g. "50,172,133")', required: true },
  k: { type: 'int', help: 'items to return', default: 10 },
  runtime: { type: 'string', help: 'onnx (the exported graph on onnxruntime-node) or tfjs', default: 'onnx', choices: RUNTIMES },
});

export default defineCommand({
  description: 'recommend the next items for one history of raw item ids (titles and scores included)',
  options,
  async run(o, ctx) {
    const history = o.history.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (!history.length) throw new RecdistillError('E_USAGE', '--history: give at least one item id, e.g. --history 50,172,133.');
    if (!Number.isInteger(o.k) || o.k < 1) throw new RecdistillError('E_USAGE', `--k must be a positive integer, got ${o.k}.`);
    const rec = await loadRecommender(o.student, { runtime: o.runtime as Runtime, log: ctx.log });
    try {
      return { ...(await rec.recommend(history, o.k)) };
    } finally {
      await rec.dispose();
    }
  },
  format(s: Recommendation) {
    const items = s.items ?? [];
    return items.map((it, i) => `${String(i + 1).padStart(3)}. ${it.title} (id ${it.id})  ${it.score.toFixed(4)}`).join('\n');
  },
});
