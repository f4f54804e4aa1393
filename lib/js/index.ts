/**
 * `senet/js`: the pure-JavaScript backend. Same API, same validation and same results
 * (within the documented float32 tolerances) as the native backend `senet`, with no
 * native code: it runs anywhere Node runs, on the calling thread.
 *
 * @packageDocumentation
 */

export { squeeze, excite, scale, seBlock, seBlockAsync, setNumThreads, getNumThreads, simdLevel } from './se'
export type {
  Layout,
  Shape4,
  SEWeights,
  ScaleOptions,
  SqueezeOptions,
  ExciteOptions,
  SimdLevelName,
} from '../types'
