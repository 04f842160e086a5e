/** Public API of the teacher cache: build (teacher:cache), join slices, verify, and read (student distillation). */
export { openCache, type CacheReader, type OpenCacheOptions, type UserRows } from './reader.js';
export { runTeacherCache, summarize, type CacheRunOptions, type CacheSummary } from './run.js';
export { runPass1 } from './build.js';
export { runPass2 } from './soft.js';
export { mergeSlices } from './merge.js';
export { verifyCache, type VerifyResult } from './verify.js';
export { readManifest, cacheKey, parseSlice, type CacheManifest, type HeadConfig, type HiddenDtype } from './format.js';
