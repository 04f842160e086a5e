/**
 * A real byte-level BPE tokenizer (GPT-2 scheme) for the tiny model, written as a Hugging Face
 * `tokenizer.json` that transformers.js loads. All 256 byte tokens are in the vocabulary, so any text
 * (including latin-1 titles like "Misérables", which are 2 UTF-8 bytes per accented letter) tokenises;
 * merges learned from a small built-in English corpus (plus optional user text) keep sequences short.
 */

import { TextEncoder } from 'node:util';

/** GPT-2's byte -> printable unicode char map (bytes that are printable map to themselves). */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const out = new Array<string>(256);
  for (const b of bs) out[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (out[b] === undefined) out[b] = String.fromCharCode(256 + n++);
  return out;
}

/** The GPT-2 pre-tokenizer regex (the same one transformers.js's ByteLevel pre-tokenizer uses). */
const PRETOKENIZE = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Built-in corpus: prompt words, genres, common title words. Deterministic merges come from it. */
const BUILTIN_CORPUS = `
the of and a to in is you that it he was for on are as with his they i at be this have from or one had by word
but not what all were we when your can said there use an each which she do how their if will up other about
out many then them these so some her would make like him into time has look two more write go see number no
way could people my than first water been call who oil its now find long down day did get come made may part
new old love man woman girl boy life story night day world city house home family war king queen last little
big great good bad dead death blood dark black white red blue green star stars time lost return returns back
dream dreams heart fire ice money game games music school high american america english french city country
street road river island mountain sea ocean sun moon earth space planet star trek wars alien aliens monster
monsters ghost ghosts devil angel angels god heaven hell paradise secret secrets mystery murder kill killer
killing crime police detective spy agent mission impossible escape prison hunt hunter hunters fight fighter
club gang gun guns man men woman women kid kids children child baby mother father brother brothers sister
sisters son daughter wife husband friend friends lover lovers wedding bride marriage kiss romance romantic
comedy drama horror thriller action adventure animation documentary fantasy musical western crime noir film
sci fi fiction science story tale tales legend legends hero heroes private public party beach summer winter
spring fall christmas holiday sunday monday weekend hour hours day days year years century one two three four
five six seven eight nine ten hundred thousand million first second third part chapter episode return revenge
rising fall falling dead living alive ghost island jungle desert forest garden park zoo circus show theater
movie movies picture pictures camera light lights shadow shadows sound silence voice song songs dance dancing
sing singing rock roll blues jazz band boys girls ladies gentlemen mr mrs miss sir lady lord king prince
princess emperor empire republic nation president general captain doctor professor nurse teacher student
lawyer judge jury trial truth lies lie liar true false real fake big small tiny giant little short long tall
high low fast slow quick hot cold wild crazy mad happy sad funny strange normal perfect beautiful ugly pretty
sweet bitter sour young old new last final ultimate
Here is the viewing history of a user, most recent last. Predict the next item the user will choose.
The user watched, rated, bought, liked and reviewed these movies, books and products in order.
Action, Adventure, Animation, Children's, Comedy, Crime, Documentary, Drama, Fantasy, Film-Noir,
Horror, Musical, Mystery, Romance, Sci-Fi, Thriller, War, Western, unknown, IMAX.
The Story of the Man and the Woman, Love in the City, Night of the Dead, Return of the King, A Day in Life,
Star Wars, Toy Story, Star Trek, The Godfather, Batman Returns, Jurassic Park, Pulp Fiction, Fargo, Twelve Monkeys,
Les Misérables, Amélie, Crouching Tiger, The English Patient, Independence Day, Mission Impossible,
(1939) (1950) (1960) (1977) (1980) (1985) (1990) (1993) (1994) (1995) (1996) (1997) (1998) (1999) (2000) (2010)
Books, Electronics, Home and Kitchen, Beauty, Sports and Outdoors, Clothing, Shoes, Jewelry, Toys and Games,
Movies and TV, Music, Video Games, Tools, Health, Grocery, Office Products, Pet Supplies, Garden.
1. 2. 3. 4. 5. 6. 7. 8. 9. 10. 11. 12. 13. 14. 15. 16. 17. 18. 19. 20. 100. 200.
`;

/** The built-in corpus, its Title Case copy (titles are capitalised) and every year 1900-2029 as "(1995)". */
export function builtinCorpus(): string {
  const title = BUILTIN_CORPUS.replace(/\b\p{Ll}/gu, (c) => c.toUpperCase());
  const years = Array.from({ length: 130 }, (_, i) => `(${1900 + i})`).join(' ');
  return `${BUILTIN_CORPUS}\n${title}\n${years}\n${'— '.repeat(8)}`;
}

function pretokenize(text: string, byteMap: string[], enc: TextEncoder): string[] {
  return (text.match(PRETOKENIZE) ?? []).map((w) => Array.from(enc.encode(w), (b) => byteMap[b]!).join(''));
}

/**
 * Learn `numMerges` BPE merges from `corpus` (classic algorithm: repeatedly merge the most frequent
 * adjacent pair; ties broken by the pair string so the result is deterministic).
 */
export function learnMerges(corpus: string, numMerges: number): [string, string][] {
  const byteMap = bytesToUnicode();
  const enc = new TextEncoder();
  const freq = new Map<string, number>();
  for (const w of pretokenize(corpus, byteMap, enc)) freq.set(w, (freq.get(w) ?? 0) + 1);
  // Each distinct word as a list of symbols, with its count.
  const words = [...freq.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([w, c]) => ({ syms: Array.from(w), c }));
  const merges: [string, string][] = [];
  while (merges.length < numMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, c } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + '\u0000' + syms[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + c);
      }
    }
    let best = '';
    let bestCount = 0; // any pair that occurs (so every corpus word can become one token)
    for (const [k, v] of pairs) if (v > bestCount || (v === bestCount && best !== '' && k < best)) [best, bestCount] = [k, v];
    if (best === '') break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
  }
  return merges;
}

/** Special tokens (ChatML, as Qwen uses), placed after the BPE vocabulary. */
const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

/** ChatML template (the Qwen2 family's format), so the tiny model exercises apply_chat_template. */
const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  vocabSize: number;
}

/** Build tokenizer.json + tokenizer_config.json for a byte-level BPE with the given merges. */
export function buildTokenizerFiles(merges: [string, string][], maxLength: number): TokenizerFiles {
  const byteMap = bytesToUnicode();
  const vocab: Record<string, number> = {};
  let next = 0;
  // Byte tokens in byte order (ids 0..255), then merged tokens in merge order.
  for (let b = 0; b < 256; b++) vocab[byteMap[b]!] = next++;
  for (const [a, b] of merges) if (vocab[a + b] === undefined) vocab[a + b] = next++;
  const added = SPECIAL_TOKENS.map((content) => ({
    id: next++,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => [a, b]),
    },
  };
  const tokenizerConfig = {
    tokenizer_class: 'Qwen2Tokenizer',
    model_max_length: maxLength,
    bos_token: null,
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
    unk_token: null,
    add_bos_token: false,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    errors: 'replace',
    chat_template: CHAT_TEMPLATE,
    added_tokens_decoder: Object.fromEntries(added.map((t) => [String(t.id), { ...t, id: undefined }])),
  };
  return { tokenizerJson, tokenizerConfig, vocabSize: next };
}
