/**
 * `senet`: Squeeze-and-Excitation networks on multicore CPUs, native backend (Rust
 * kernels, SIMD chosen at runtime, one thread pool). `senet/js` exports the same API in
 * pure JavaScript.
 *
 * @packageDocumentation
 */

export {
  squeeze,
  excite,
  scale,
  seBlock,
  seBlockAsync,
  setNumThreads,
  getNumThreads,
  simdLevel,
  supportedSimdLevels,
  setSimdLevel,
} from './native/se'
export type {
  Layout,
  Shape4,
  SEWeights,
  ScaleOptions,
  SqueezeOptions,
  ExciteOptions,
  SimdLevelName,
} from './types'
