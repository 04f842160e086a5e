/**
 * Textified histories as token ids. A prompt is: head (chat template start + instruction), one line per
 * item "k. <item text>\n", tail (rest of the instruction + generation prompt). Pieces are tokenised
 * separately and concatenated, so every item's tokens are the same in every prompt (cached once per item)
 * and the index of the last token of each item's text is exact, not recovered from offsets.
 * The model is sent head + lines only: in a causal model the states at the items cannot see the tail, so
 * running it would cost tokens and change nothing. The tail still counts against the budget (planHistory),
 * so the whole message fits the model's window as a chat would send it.
 */
import { field } from '../util/fields.js';
import type { PreTrainedTokenizer } from '@huggingface/transformers';
import type { ItemInfo } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { itemText } from './item-text.js';
import type { PromptTemplate } from './template.js';
import type { Window } from './window.js';

export { itemText } from './item-text.js';
export { loadPromptTemplate, parsePromptTemplate, DEFAULT_PROMPT, type PromptTemplate } from './template.js';
export { planWindows, TRUNCATE_MODES, type TruncateMode, type Window } from './window.js';

/** Longest item text in tokens; longer texts keep their first tokens (titles are far shorter). */
const MAX_ITEM_TOKENS = 48;

const MARK = '\u0001HISTORY\u0001';

export interface PromptCodec {
  head: number[];
  tail: number[];
  /** Whether the tokenizer's chat template wrapped the message. */
  chat: boolean;
  /** Tokens of " <item text>" (capped at MAX_ITEM_TOKENS). */
  itemTokens(id: number): number[];
  /** Tokens of "k." (an item's number in the list) and of the newline that ends each line. */
  numberTokens(k: number): number[];
  newline: number[];
  /** Tokens of an item's text alone (no leading space), for item embeddings. */
  itemOnlyTokens(id: number): number[];
  /** Upper bound of the tokens a line for this item takes in a list of up to `n` lines. */
  lineTokens(id: number, n: number): number;
  /** Ids for items[w.start..w.end] and, per item, the index of its text's last token. */
  build(items: ArrayLike<number>, w: Pick<Window, 'start' | 'end'>): { ids: number[]; ends: number[] };
  decode(ids: number[]): string;
}

function hasChatTemplate(tok: PreTrainedTokenizer): boolean {
  const t = field(tok, 'chat_template');
  return typeof t === 'string' ? t.length > 0 : !!t;
}

export function createPromptCodec(tok: PreTrainedTokenizer, template: PromptTemplate, items: ItemInfo[]): PromptCodec {
  const enc = (s: string, special = false): number[] => (s ? tok.encode(s, { add_special_tokens: special }) : []);
  const chat = hasChatTemplate(tok);
  let head: number[];
  let tail: number[];
  if (chat) {
    const rendered = tok.apply_chat_template([{ role: 'user', content: template.before + MARK + template.after }], { tokenize: false, add_generation_prompt: true });
    const [h, t] = String(rendered).split(MARK) as [string, string | undefined];
    if (t === undefined) throw new RecdistillError('E_CONFIG', `the chat template dropped the message content; cannot place the history in ${template.path}.`);
    head = enc(h);
    tail = enc(t);
  } else {
    head = enc(template.before, true); // BOS where the tokenizer adds one
    tail = enc(template.after);
  }
  const newline = enc('\n');
  const itemCache = new Map<number, number[]>();
  const numCache = new Map<number, number[]>();
  const itemInfo = (id: number): ItemInfo => {
    const it = items[id];
    if (!it || id <= 0) throw new RecdistillError('E_INPUT', `item id ${id} is not in the dataset (valid 1..${items.length - 1}).`);
    return it;
  };
  const itemTokens = (id: number): number[] => {
    let t = itemCache.get(id);
    if (!t) itemCache.set(id, (t = enc(' ' + itemText(itemInfo(id))).slice(0, MAX_ITEM_TOKENS)));
    return t;
  };
  const numberTokens = (k: number): number[] => {
    let t = numCache.get(k);
    if (!t) numCache.set(k, (t = enc(`${k}.`)));
    return t;
  };
  // Widest "k." for k <= n (running max, cached): a line's bound must hold wherever it lands in the list.
  const widest: number[] = [0];
  const maxNum = (n: number): number => {
    for (let k = widest.length; k <= n; k++) widest.push(Math.max(widest[k - 1]!, numberTokens(k).length));
    return widest[n]!;
  };
  return {
    head,
    tail,
    chat,
    itemTokens,
    numberTokens,
    newline,
    itemOnlyTokens: (id) => enc(itemText(itemInfo(id))).slice(0, MAX_ITEM_TOKENS),
    lineTokens: (id, n) => maxNum(n) + itemTokens(id).length + newline.length,
    build(seq, w) {
      const ids = [...head];
      const ends: number[] = [];
      for (let t = w.start; t <= w.end; t++) {
        ids.push(...numberTokens(t - w.start + 1), ...itemTokens(seq[t]!));
        ends.push(ids.length - 1);
        ids.push(...newline);
      }
      return { ids, ends };
    },
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
  };
}
