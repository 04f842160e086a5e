import { defineOptions } from '../../config/options.js';
import { exportStudentOnnx } from '../../student/serving/onnx.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder (model.safetensors)', required: true },
  onnx: { type: 'string', help: 'output ONNX file (inputs history int64 [batch, length], k int64 [1]; outputs scores, top_scores, top_ids)', required: true },
});

export default defineCommand({
  description: 'export a trained student as an ONNX graph (onnxruntime in Node, Python, C#, the browser)',
  options,
  async run(o, ctx) {
    const r = exportStudentOnnx(o.student, o.onnx);
    ctx.log(`student:export: wrote ${r.file} (${(r.bytes / 1e6).toFixed(2)} MB; ${r.config.numItems} items, maxLen ${r.config.maxLen}, d=${r.config.dims}, ${r.config.blocks} blocks)`);
    return { onnx: r.file, bytes: r.bytes, numItems: r.config.numItems, maxLen: r.config.maxLen };
  },
});
