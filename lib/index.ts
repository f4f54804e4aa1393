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
import { SEResNet as SEResNetBase } from './model/seresnet'
import type { ModelBackend } from './model/program'
import { nativeBackend } from './native/executor'

/**
 * An SE-ResNet (timm or Cadene/Caffe architectures, or a custom configuration) running
 * on the native addon: weights prepacked once, forward passes on the addon's pool.
 */
export class SEResNet extends SEResNetBase {
  protected static override readonly backend: ModelBackend = nativeBackend
}

export { ARCHS } from './model/config'
export type { Arch, SEResNetConfig } from './model/config'
export type { SEResNetCreateOptions, SEResNetLoadOptions } from './model/seresnet'
export type { OnnxExportOptions } from './model/onnx'
export type {
  Layout,
  Shape4,
  SEWeights,
  ScaleOptions,
  SqueezeOptions,
  ExciteOptions,
  SimdLevelName,
} from './types'
