/**
 * The SE operations on the native addon: arguments are validated by the same module as
 * the pure-JS backend (`lib/validate.ts`), so both backends accept and reject the same
 * calls with the same errors; then the Rust kernels run on the addon's thread pool.
 */
import { addon } from './addon'
import {
  checkNumThreads,
  prepareExcite,
  prepareScale,
  prepareSEBlock,
  prepareSqueeze,
} from '../validate'
import type { ExciteOptions, ScaleOptions, SEWeights, Shape4, SimdLevelName, SqueezeOptions } from '../types'

/** Channel means: z[n·C + c] = mean over H×W of x[n, c]. Returns `opts.out` when given. */
export function squeeze(x: Float32Array, shape: Shape4, opts?: SqueezeOptions): Float32Array {
  const a = prepareSqueeze(x, shape, opts)
  const r = addon.squeeze(a.x, a.n, a.c, a.h, a.w, a.layout === 'nhwc', a.out)
  return a.out ?? (r as Float32Array)
}

/** Gates: sigmoid(W2 · relu(W1 · z + b1) + b2), [n, C]. Returns `opts.out` when given. */
export function excite(z: Float32Array, n: number, weights: SEWeights, opts?: ExciteOptions): Float32Array {
  const a = prepareExcite(z, n, weights, opts)
  const r = addon.excite(a.z, a.n, a.w1, a.b1, a.w2, a.b2, a.out)
  return a.out ?? (r as Float32Array)
}

/** y = x · gate[n, c] (+ residual) (then ReLU). Returns `opts.out` when given. */
export function scale(x: Float32Array, shape: Shape4, gates: Float32Array, opts?: ScaleOptions): Float32Array {
  const a = prepareScale(x, shape, gates, opts)
  const r = addon.scale(a.x, a.n, a.c, a.h, a.w, a.layout === 'nhwc', a.gates, a.residual, a.relu, a.out)
  return a.out ?? (r as Float32Array)
}

/** Squeeze + excite + scale (+ residual, + ReLU) in two passes over `x`. */
export function seBlock(x: Float32Array, shape: Shape4, weights: SEWeights, opts?: ScaleOptions): Float32Array {
  const a = prepareSEBlock(x, shape, weights, opts)
  const r = addon.seBlock(a.x, a.n, a.c, a.h, a.w, a.layout === 'nhwc', a.w1, a.b1, a.w2, a.b2, a.residual, a.relu, a.out)
  return a.out ?? (r as Float32Array)
}

/**
 * `seBlock` off the JS thread. `x`, `residual` and the weights are copied before this
 * returns, so the caller may mutate or reuse them at once without affecting the result
 * (no torn reads). The kernels run on the addon's pool; no libuv thread waits on them.
 * With `opts.out`, the result is copied into it when the promise settles, on the JS
 * thread, and `opts.out` is what the promise resolves to. Invalid arguments reject.
 */
export async function seBlockAsync(
  x: Float32Array,
  shape: Shape4,
  weights: SEWeights,
  opts?: ScaleOptions,
): Promise<Float32Array> {
  const a = prepareSEBlock(x, shape, weights, opts)
  const y = await addon.seBlockAsync(a.x, a.n, a.c, a.h, a.w, a.layout === 'nhwc', a.w1, a.b1, a.w2, a.b2, a.residual, a.relu)
  if (a.out) {
    a.out.set(y)
    return a.out
  }
  return y
}

/** Sets the size of the addon's one thread pool (default: the cores available, or `SENET_NUM_THREADS`). */
export function setNumThreads(n: number): void {
  addon.setNumThreads(checkNumThreads(n))
}

/** Threads of the addon's pool. */
export function getNumThreads(): number {
  return addon.getNumThreads()
}

/** The instruction set the kernels use now (chosen at runtime; see `setSimdLevel`). */
export function simdLevel(): SimdLevelName {
  return addon.simdLevel() as SimdLevelName
}

/** The levels this CPU supports, most portable first. */
export function supportedSimdLevels(): SimdLevelName[] {
  return addon.supportedSimdLevels() as SimdLevelName[]
}

/**
 * Forces a SIMD level at or below the CPU's best (for tests and benchmarks; the
 * environment variable `SENET_SIMD` does the same at startup). Throws a RangeError for
 * an unknown or unsupported level.
 */
export function setSimdLevel(level: SimdLevelName): void {
  if (typeof level !== 'string') throw new TypeError(`level must be a string, got ${typeof level}`)
  const supported = supportedSimdLevels()
  if (!(supported as string[]).includes(level)) {
    throw new RangeError(`level must be one of ${supported.map((s) => `'${s}'`).join(', ')} on this CPU, got '${level}'`)
  }
  addon.setSimdLevel(level)
}
