/**
 * recdistill's public API: the stage functions the CLI and the demo call (each with one typed config: its option
 * table resolved), and the serving entry points.
 *
 *   import { loadRecommender } from 'recdistill';
 *   const rec = await loadRecommender('student/ml-100k-1a2b3c4d');
 *   const { items } = await rec.recommend(['50', '172', '133'], 10); // the dataset's raw ids -> [{ id, title, score }]
 *   await rec.dispose();
 */
export { RecdistillError } from './errors.js';
export type { PreparedDataset, ItemInfo, UserSequence } from './data/types.js';

// Data
export { prepareDataset, type PrepareOptions } from './data/prepare.js';
export { loadDataset, prepareOptionsFrom } from './data/options.js';

// Teacher and cache
export { loadLlmTeacher, type LlmTeacherOptions, type LlmTeacherEncoder } from './teacher/llm/index.js';
export { inspectModel, type InspectReport } from './teacher/llm/inspect.js';
export { writeReplicaModel, type ReplicaOptions, type ReplicaSummary } from './teacher/replica/index.js';
export { runTeacherCache, type CacheSummary } from './cache/run.js';
export { resolveCacheConfig, runCacheStage, type CacheConfig } from './cache/config.js';
export { cacheOptions } from './cache/options.js';
export { mergeOptions, runMergeStage, type MergeConfig } from './cache/merge-stage.js';
export { openCache, type CacheReader } from './cache/reader.js';

// Student
export { trainStudent } from './student/training/train.js';
export { runStudentStage, studentStageConfig, studentStageOptions, type StudentStageConfig, type StudentStageEnv } from './distill/stage.js';
export { runAblationStage, type AblationReport, type AblationSummary } from './distill/ablate-stage.js';
export { ablateOptions, type AblateOptions } from './distill/ablate-options.js';
export { loadStudent, topK, type LoadedStudent, type StudentInfo } from './student/serving/serve.js';
export { exportStudentOnnx, loadStudentOnnx, type OnnxStudent } from './student/serving/onnx.js';
export { loadRecommender, type Recommender, type Recommendation } from './serve/recommender.js';
export { SERVE_DEFAULTS, startServer, type RunningServer, type ServeOptions } from './serve/http.js';

// Evaluation and benchmark
export { evaluateRanking, popularityScorer } from './eval/evaluate.js';
export { evalOptions, runEvalStage, type EvalConfig } from './student/serving/eval-stage.js';
export { runBench } from './bench/run.js';
