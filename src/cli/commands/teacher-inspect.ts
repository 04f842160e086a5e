import { defineOptions } from '../../config/options.js';
import { inspectModel, measureForward, type ForwardTiming, type InspectReport } from '../../teacher/llm/inspect.js';
import { llmTeacherOptions } from '../../teacher/llm/options.js';
import { defineCommand } from '../command.js';

/** teacher:inspect's summary: the model's layout, and with --measure-tokens one timed forward pass. */
export type InspectSummary = InspectReport & { forward?: ForwardTiming; peakRssMB?: number };

const options = defineOptions({
  model: llmTeacherOptions.model,
  dtype: llmTeacherOptions.dtype,
  offline: llmTeacherOptions.offline,
  measureTokens: { type: 'int', help: 'also time one forward pass of this many tokens, whole graph vs pruned to the tapped layers (alternating, best of --rounds)', default: 0 },
  rounds: { type: 'int', help: 'with --measure-tokens: rounds of (whole, pruned)', default: 3 },
  threads: llmTeacherOptions.threads,
  dump: { type: 'string', help: 'write the graph structure (nodes, I/O, initializer names and shapes; no weights) as JSON to this file' },
});

export default defineCommand({
  description: 'show how the teacher reads an ONNX LM: exporter family, sizes, weight format, inputs, and the tensor each layer maps to',
  options,
  async run(o, ctx) {
    const r = await inspectModel({ model: o.model, dtype: o.dtype, offline: o.offline, dump: o.dump, log: ctx.log });
    if (o.dump) ctx.log(`teacher:inspect: graph structure written to ${o.dump}`);
    const forward = o.measureTokens ? await measureForward({ model: o.model, dtype: o.dtype, tokens: o.measureTokens, rounds: o.rounds, threads: o.threads, offline: o.offline, log: ctx.log }) : undefined;
    return { ...r, ...(forward ? { forward, peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024) } : {}) };
  },
  format(r: InspectSummary) {
    const lines = [
      `model       ${r.model} (${r.dtype}) -> ${r.onnxPath}`,
      `family      ${r.family}${r.producer ? ` (producer ${r.producer})` : ''}`,
      `sizes       ${r.blocks} blocks, hidden ${r.hiddenSize}, ${r.heads} heads, ${r.kvHeads} kv heads, vocabulary ${r.vocabSize ?? '?'}`,
      `weights     ${r.weights.format}; ${Object.entries(r.weights.bytesByType).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)} MB`).join(', ')}`,
      `external    ${r.externalData.length ? r.externalData.join(', ') : 'none'}`,
      `inputs      ${r.inputs.map((i) => `${i.name} ${i.type}[${i.shape.join(',')}]`).join('; ')}`,
      `outputs     ${r.outputs.length > 4 ? `${r.outputs.slice(0, 3).map((i) => i.name).join(', ')}, … (${r.outputs.length})` : r.outputs.map((i) => i.name).join(', ')}`,
      `nodes       ${r.nodes}: ${Object.entries(r.ops).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    ];
    if (r.problem) lines.push(`layers      NOT RESOLVED: ${r.problem}`);
    else {
      lines.push('layers      (the residual stream after block i, before the final norm)');
      for (const l of r.layerDetails) lines.push(`  ${String(l.layer).padStart(3)} (${String(l.fromEnd).padStart(4)})  ${l.tensor}${l.added ? `  [sum added: not in the export; operands of ${l.via}]` : ''}`);
    }
    const f = r.forward;
    if (f) {
      lines.push(`forward     ${f.tokens} tokens, best of ${f.rounds}: whole graph ${f.fullMs.toFixed(0)} ms (${f.fullTokensPerSecond.toFixed(0)} tokens/s), pruned to the taps ${f.prunedMs.toFixed(0)} ms (${f.prunedTokensPerSecond.toFixed(0)} tokens/s, ${f.nodesLeftOut} nodes left out): ${f.speedup.toFixed(2)}x`);
    }
    return lines.join('\n');
  },
});
