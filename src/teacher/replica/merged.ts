/**
 * A legacy merged decoder (`decoder_model_merged.onnx`), as optimum/onnx/graph_transformations.py
 * `merge_decoders` writes it: one top-level If node "optimum::if" on the input `use_cache_branch`
 * (bool [1]); then_branch "with_past" and else_branch "no_past" each hold a whole decoder graph; the
 * weights are deduplicated into the top-level graph; graph inputs = the decoders' inputs + use_cache_branch;
 * IR version 9. Both branches here are the Optimum replica (which also runs with an empty past), so the
 * model loads and runs; its blocks live inside subgraphs, where no tensor can be made a graph output, so
 * the teacher must splice the no-past branch out of the If to tap it.
 */
import onnxProto from 'onnx-proto';
import { valueInfo } from '../../util/onnx-graph.js';
import { DataType, type GraphDesc } from '../../util/onnx-file.js';
import { buildOptimumGraph } from './optimum.js';
import type { DecoderSpec } from './spec.js';

const { onnx } = onnxProto;

export function buildMergedGraph(spec: DecoderSpec): { desc: GraphDesc; blockOutputs: (string | undefined)[] } {
  const { desc } = buildOptimumGraph(spec, { dtype: 'fp32' });
  const branch = (name: string) => onnx.GraphProto.create({ name, node: desc.nodes, output: desc.outputs });
  const A = onnx.AttributeProto.AttributeType;
  const ifNode = onnx.NodeProto.create({
    name: 'optimum::if',
    opType: 'If',
    input: ['use_cache_branch'],
    output: desc.outputs.map((o) => o.name!),
    attribute: [
      onnx.AttributeProto.create({ name: 'else_branch', type: A.GRAPH, g: branch('no_past') }),
      onnx.AttributeProto.create({ name: 'then_branch', type: A.GRAPH, g: branch('with_past') }),
    ],
  });
  return {
    desc: { ...desc, irVersion: 9, nodes: [ifNode], inputs: [...desc.inputs, valueInfo('use_cache_branch', DataType.BOOL, [1])] },
    blockOutputs: Array.from({ length: spec.layers }, () => undefined),
  };
}
