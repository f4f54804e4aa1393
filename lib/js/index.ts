/**
 * `senet/js`: the pure-JavaScript backend. Same API, same validation and same results
 * (within the documented float32 tolerances) as the native backend `senet`, with no
 * native code: it runs anywhere Node runs. The SE kernels run on the calling thread;
 * `SEResNet.forward` runs in a worker thread, `forwardSync` on the calling thread.
 *
 * @packageDocumentation
 */

export { squeeze, excite, scale, seBlock, seBlockAsync, setNumThreads, getNumThreads, simdLevel } from './se'
import { SEResNet as SEResNetBase } from '../model/seresnet'
import type { ModelBackend } from '../model/program'
import { jsBackend } from './executor'

/** An SE-ResNet running on the pure-JS executor: same API and results as `senet`'s. */
export class SEResNet extends SEResNetBase {
  protected static override readonly backend: ModelBackend = jsBackend
}

export { ARCHS } from '../model/config'
export type { Arch, SEResNetConfig } from '../model/config'
export type { SEResNetCreateOptions, SEResNetLoadOptions } from '../model/seresnet'
export type { OnnxExportOptions } from '../model/onnx'
export type {
  Layout,
  Shape4,
  SEWeights,
  ScaleOptions,
  SqueezeOptions,
  ExciteOptions,
  SimdLevelName,
} from '../types'
