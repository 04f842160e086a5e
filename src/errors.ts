/** Typed errors with stable codes. Only the CLI entry point turns them into exit codes. */
export type ErrorCode =
  | 'E_USAGE' // bad flags, unknown options, wrong types
  | 'E_CONFIG' // bad config file
  | 'E_INPUT' // malformed input data (file, line, field)
  | 'E_NOT_FOUND' // missing file, model, cache
  | 'E_ENCODING' // wrong text encoding
  | 'E_EMPTY' // nothing left after filtering
  | 'E_CHECKSUM' // sha256 mismatch
  | 'E_MISMATCH' // artifact provenance does not match (fingerprint, config)
  | 'E_NUMERIC' // NaN / Inf during training
  | 'E_NETWORK' // download failed / offline
  | 'E_AUTH' // the hub refused: private or gated repo, missing or insufficient token
  | 'E_INTERNAL';

export class RecdistillError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RecdistillError';
    this.code = code;
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new RecdistillError(code, message);
}
