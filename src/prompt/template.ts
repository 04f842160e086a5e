import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';

const HISTORY_SLOT = '{{history}}';

/** prompts/history.md in the package (resolved from this file, so it works from any cwd). */
export const DEFAULT_PROMPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'prompts', 'history.md');

export interface PromptTemplate {
  path: string;
  /** sha256 of the file bytes: goes into the manifest. */
  sha256: string;
  /** The text before and after `{{history}}`. */
  before: string;
  after: string;
}

export function parsePromptTemplate(text: string, path: string): PromptTemplate {
  const at = text.indexOf(HISTORY_SLOT);
  if (at < 0 || text.indexOf(HISTORY_SLOT, at + 1) >= 0) {
    throw new RecdistillError('E_CONFIG', `prompt template ${path} must contain ${HISTORY_SLOT} exactly once (found ${text.split(HISTORY_SLOT).length - 1}).`);
  }
  // Lines of the history are "\n"-terminated: the slot's own trailing newline is the last line's.
  const before = text.slice(0, at);
  const after = text.slice(at + HISTORY_SLOT.length).replace(/^\n/, '');
  return { path, sha256: sha256(text), before, after };
}

export function loadPromptTemplate(path: string = DEFAULT_PROMPT): PromptTemplate {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch {
    throw new RecdistillError('E_NOT_FOUND', `prompt template ${abs} not found or not readable.`);
  }
  return parsePromptTemplate(text, abs);
}
