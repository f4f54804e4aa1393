/** Public types shared by the native and the pure-JS backends. */

/** Memory order of a 4-D buffer. Shapes are always given as logical N, C, H, W. */
export type Layout = 'nchw' | 'nhwc'

/** Logical batch, channels, height, width, whatever the layout. */
export type Shape4 = [n: number, c: number, h: number, w: number]

/**
 * Excitation weights in PyTorch layout (timm's 1×1 convs and nn.Linear alike):
 * `w1` is [C/r, C], `w2` is [C, C/r]; `b1` [C/r] and `b2` [C] are optional
 * (timm and the Caffe release have them, senet.pytorch has none). C/r is taken from the
 * weights' lengths, never recomputed from a reduction ratio.
 */
export interface SEWeights {
  w1: Float32Array
  b1?: Float32Array
  w2: Float32Array
  b2?: Float32Array
}

/** Options of `scale` and `seBlock`. */
export interface ScaleOptions {
  /** Buffer order of `x`, `residual` and `out` (default `'nchw'`). */
  layout?: Layout
  /** Where to write the result (length N·C·H·W); may be `x` itself (in place). */
  out?: Float32Array
  /** Added after scaling: `y = x·gate + residual`; same shape and layout as `x`. */
  residual?: Float32Array
  /** Apply ReLU last: `y = max(0, x·gate [+ residual])`. */
  relu?: boolean
}

/** Options of `squeeze`. */
export interface SqueezeOptions {
  layout?: Layout
  /** Where to write the N·C means. */
  out?: Float32Array
}

/** Options of `excite`. */
export interface ExciteOptions {
  /** Where to write the N·C gates. */
  out?: Float32Array
}

/** The instruction-set level the kernels run with. */
export type SimdLevelName = 'avx512' | 'avx2' | 'neon' | 'scalar'
