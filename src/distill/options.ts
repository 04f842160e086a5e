import { defineOptions } from '../config/options.js';

/** Distillation flags of student:train (all terms off unless --cache is given and a lambda > 0). */
export const distillOptions = defineOptions({
  cache: { type: 'string', help: 'teacher cache directory to distil from (empty: plain training)' },
  lambdaCos: { type: 'number', help: 'weight of 1 - cosine(student proj, teacher) hidden alignment (SLMRec)', default: 0 },
  lambdaL2: { type: 'number', help: 'weight of squared L2 hidden alignment (SLMRec)', default: 0 },
  lambdaMs: { type: 'number', help: 'weight of multi-supervision adapters on aligned intermediate layers (SLMRec)', default: 0 },
  lambdaKd: { type: 'number', help: 'weight of soft-label distillation (KL over teacher top-K)', default: 0 },
  lambdaEmb: { type: 'number', help: 'weight of item-embedding distillation (DLLM2Rec)', default: 0 },
});
