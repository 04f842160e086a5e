import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoTokenizer } from '@huggingface/transformers';
import { afterAll, describe, expect, it } from 'vitest';
import { tinyModelDir } from './fixtures.js';
import { learnMerges, bytesToUnicode } from '../../src/teacher/tiny/bpe.js';
import { main } from '../../src/cli/main.js';

const a = tinyModelDir({ seed: 1 });
const b = tinyModelDir({ seed: 1 });
const c = tinyModelDir({ seed: 2 });
afterAll(() => [a, b, c].forEach((m) => m.cleanup()));

describe('model:tiny', () => {
  it('writes the transformers.js layout, deterministic bytes per seed', () => {
    const read = (d: string, f: string) => readFileSync(join(d, f));
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx']) {
      expect(read(a.dir, f).equals(read(b.dir, f)), f).toBe(true);
    }
    expect(read(a.dir, 'onnx/model.onnx').equals(read(c.dir, 'onnx/model.onnx'))).toBe(false);
    expect(read(a.dir, 'tokenizer.json').equals(read(c.dir, 'tokenizer.json'))).toBe(true); // tokenizer does not depend on the seed
    const cfg = JSON.parse(read(a.dir, 'config.json').toString());
    expect(cfg).toMatchObject({ hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2 });
    expect(read(a.dir, 'onnx/model.onnx').length).toBeLessThan(1_000_000);
  });

  it('the tokenizer round-trips latin-1 titles through transformers.js', async () => {
    const tok = await AutoTokenizer.from_pretrained(a.dir, { local_files_only: true });
    const vocab = JSON.parse(readFileSync(join(a.dir, 'config.json'), 'utf8')).vocab_size as number;
    for (const text of ['Misérables, Les (1995) — Drama, Musical', 'Amélie (2001)', 'Ça ira, naïve façade ÿ ß', 'plain ascii: 123!']) {
      const ids = tok.encode(text, { add_special_tokens: false });
      expect(ids.every((i) => i >= 0 && i < vocab)).toBe(true);
      expect(tok.decode(ids)).toBe(text);
    }
    // "é" is two UTF-8 bytes (0xC3 0xA9); without a merge for them it is two byte tokens.
    const map = bytesToUnicode();
    expect(map[0xc3]! + map[0xa9]!).toBe('Ã©');
  });

  it('has a chat template (ChatML) that transformers.js applies', async () => {
    const tok = await AutoTokenizer.from_pretrained(a.dir, { local_files_only: true });
    const s = tok.apply_chat_template([{ role: 'user', content: 'hi' }], { tokenize: false, add_generation_prompt: true });
    expect(s).toBe('<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
    const ids = tok.encode(String(s), { add_special_tokens: false });
    expect(tok.decode(ids.slice(0, 1))).toBe('<|im_start|>'); // special tokens are single ids
  });

  it('BPE merges: most frequent pair first, deterministic ties', () => {
    // Words "aa" x3 and "ab" x1 -> pair (a,a) occurs 3 times, (a,b) once.
    expect(learnMerges('aa aa aa ab', 1)).toEqual([['a', 'a']]);
    // " aa" pre-tokenises with a leading space (Ġ), so the second merge joins Ġ with "aa".
    expect(learnMerges('x aa aa', 2)).toEqual([['a', 'a'], ['Ġ', 'aa']]);
  });

  it('CLI: model:tiny --json prints the summary; bad flags are usage errors', async () => {
    const out: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    const err = process.stderr.write.bind(process.stderr);
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      expect(await main(['model:tiny', '--out', join(c.dir, '..', 'cli'), '--layout', 'gpt2', '--layers', '1', '--hidden', '16', '--heads', '2', '--json'])).toBe(0);
      expect(await main(['model:tiny', '--out', join(c.dir, '..', 'cli3'), '--layers', '1', '--hidden', '16', '--heads', '2', '--kv-heads', '1', '--json'])).toBe(0);
      expect(await main(['model:tiny', '--out', join(c.dir, '..', 'cli2'), '--hidden', '30', '--heads', '4'])).toBe(2);
      expect(await main(['model:tiny', '--out', join(c.dir, '..', 'cli4'), '--heads', '4', '--kv-heads', '3'])).toBe(2);
      expect(await main(['model:tiny', '--out', join(c.dir, '..', 'cli5'), '--layout', 'genai', '--hidden', '32', '--heads', '4'])).toBe(2);
    } finally {
      process.stdout.write = orig;
      process.stderr.write = err;
    }
    const summary = JSON.parse(out[0]!);
    expect(summary).toMatchObject({ layout: 'gpt2', layers: 1, hidden: 16, heads: 2 });
    expect(summary.modelSha256).toMatch(/^[0-9a-f]{64}$/);
    // The default layout is Optimum's: a Qwen2-style graph with position_ids and grouped-query attention.
    expect(JSON.parse(out[1]!)).toMatchObject({ layout: 'optimum', dtype: 'fp32', blocks: 1, hidden: 16, files: ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'] });
  });
});
