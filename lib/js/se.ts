/**
 * Squeeze-and-Excitation in pure JavaScript: the portable backend (`senet/js`) and the
 * baseline the native kernels are benchmarked against.
 *
 * Arguments are checked by `lib/validate.ts`, the same module the native wrapper uses,
 * so both backends accept and reject exactly the same calls. The kernels below then
 * rely on its guarantees (lengths match the shape; `out` is exactly `x`, exactly
 * `residual`, or disjoint).
 *
 * Numerics. Every intermediate is a JS number (float64): squeeze sums H·W float32
 * values exactly enough that its only error is the final rounding to float32; excite's
 * dot products and sigmoid run in float64 and are rounded once when stored; scale
 * computes `x·g` exactly (a float32 product fits in a float64) and rounds once, or twice
 * with a residual (≤ 0.5 ulp + 2⁻²⁹ relative). Gates are stored as float32 between
 * excite and scale, so `seBlock` is bitwise `scale(x, excite(squeeze(x)))`.
 *
 * Speed. The hot loops are small, monomorphic and branch-free in their bodies (one
 * specialised loop per residual/ReLU combination) so that V8 compiles them to plain
 * loads, multiplies and stores; squeeze keeps four independent accumulators to hide
 * the latency of the additions.
 *
 * @packageDocumentation
 */

import type { ExciteOptions, Layout, ScaleOptions, SEWeights, Shape4, SimdLevelName, SqueezeOptions } from '../types'
import {
  checkNumThreads,
  prepareExcite,
  prepareScale,
  prepareSEBlock,
  prepareSqueeze,
  type ScaleCommonArgs,
  type WeightArgs,
} from '../validate'

/**
 * Mean over H×W of every (n, c): returns the N·C means (row-major [N, C]).
 * Accumulates in float64, so the result is the exact mean rounded once to float32.
 * @throws TypeError / RangeError on invalid arguments (see `lib/validate.ts`).
 */
export function squeeze(x: Float32Array, shape: Shape4, opts?: SqueezeOptions): Float32Array {
  const a = prepareSqueeze(x, shape, opts)
  const out = a.out ?? new Float32Array(a.n * a.c)
  squeezeInto(a.x, a.n, a.c, a.hw, a.layout, out)
  return out
}

/**
 * Excitation: `gates = sigmoid(W2 · relu(W1 · z + b1) + b2)` for each of the `n` rows of
 * `z` ([n, C]); W1 is [Cr, C] and W2 [C, Cr] (PyTorch layout), Cr = `w1.length / C`.
 * `opts.out` must not share memory with `z` or the weights.
 * @throws TypeError / RangeError on invalid arguments (see `lib/validate.ts`).
 */
export function excite(z: Float32Array, n: number, weights: SEWeights, opts?: ExciteOptions): Float32Array {
  const a = prepareExcite(z, n, weights, opts)
  const out = a.out ?? new Float32Array(a.n * a.c)
  exciteInto(a.z, a.n, a.c, a, out)
  return out
}

/**
 * `y = x·gates[n, c]` broadcast over H×W, then `+ residual` and ReLU if asked.
 * `opts.out` may be `x` or `opts.residual` itself (in place).
 * @throws TypeError / RangeError on invalid arguments (see `lib/validate.ts`).
 */
export function scale(x: Float32Array, shape: Shape4, gates: Float32Array, opts?: ScaleOptions): Float32Array {
  const a = prepareScale(x, shape, gates, opts)
  const out = a.out ?? new Float32Array(a.x.length)
  scaleInto(a, a.gates, out)
  return out
}

/**
 * The whole SE block: `scale(x, excite(squeeze(x), weights), opts)`.
 * `opts.out` may be `x` or `opts.residual` itself (in place): the gates are computed
 * from `x` before anything is written.
 * @throws TypeError / RangeError on invalid arguments (see `lib/validate.ts`).
 */
export function seBlock(x: Float32Array, shape: Shape4, weights: SEWeights, opts?: ScaleOptions): Float32Array {
  const a = prepareSEBlock(x, shape, weights, opts)
  const nc = a.n * a.c
  const z = new Float32Array(nc)
  squeezeInto(a.x, a.n, a.c, a.hw, a.layout, z)
  const gates = new Float32Array(nc)
  exciteInto(z, a.n, a.c, a, gates)
  const out = a.out ?? new Float32Array(a.x.length)
  scaleInto(a, gates, out)
  return out
}

/**
 * `seBlock` behind a Promise, for API parity with the native backend. Pure JS has no
 * thread to move the work to: validation and computation run synchronously on the
 * calling thread, and the returned promise is already settled (invalid arguments give
 * a rejected promise, never a synchronous throw).
 */
export function seBlockAsync(
  x: Float32Array,
  shape: Shape4,
  weights: SEWeights,
  opts?: ScaleOptions,
): Promise<Float32Array> {
  try {
    return Promise.resolve(seBlock(x, shape, weights, opts))
  } catch (err) {
    return Promise.reject(err)
  }
}

/**
 * Accepted for API parity with the native backend and validated the same way
 * (integer 1..256), but otherwise ignored: pure JS runs on the calling thread.
 */
export function setNumThreads(n: number): void {
  checkNumThreads(n)
}

/** Always 1: the JS backend runs on the calling thread. */
export function getNumThreads(): number {
  return 1
}

/** Always `'scalar'`: JavaScript has no explicit SIMD; V8 emits scalar code for these loops. */
export function simdLevel(): SimdLevelName {
  return 'scalar'
}

// --- kernels (arguments already validated) ---------------------------------------------

function squeezeInto(x: Float32Array, n: number, c: number, hw: number, layout: Layout, out: Float32Array): void {
  if (layout === 'nchw') {
    const planes = n * c
    const hw4 = hw - (hw % 4)
    for (let p = 0; p < planes; p++) {
      const base = p * hw
      let s0 = 0
      let s1 = 0
      let s2 = 0
      let s3 = 0
      let i = base
      const end4 = base + hw4
      for (; i < end4; i += 4) {
        s0 += x[i]
        s1 += x[i + 1]
        s2 += x[i + 2]
        s3 += x[i + 3]
      }
      const end = base + hw
      for (; i < end; i++) s0 += x[i]
      out[p] = (s0 + s1 + (s2 + s3)) / hw
    }
    return
  }
  // NHWC: channels are contiguous, so sum whole pixel rows into C float64 accumulators,
  // four rows per pass to cut the accumulator traffic (four float32 values add up in
  // float64 with a relative error of ~2⁻⁵³, far below the final rounding).
  const acc = new Float64Array(c)
  const c2 = 2 * c
  const c3 = 3 * c
  const c4 = 4 * c
  for (let b = 0; b < n; b++) {
    acc.fill(0)
    const start = b * hw * c
    const end = start + hw * c
    const end4 = start + (hw - (hw % 4)) * c
    let base = start
    for (; base < end4; base += c4) {
      for (let ch = 0; ch < c; ch++) {
        const i = base + ch
        acc[ch] += x[i] + x[i + c] + (x[i + c2] + x[i + c3])
      }
    }
    for (; base < end; base += c) {
      for (let ch = 0; ch < c; ch++) acc[ch] += x[base + ch]
    }
    const o = b * c
    for (let ch = 0; ch < c; ch++) out[o + ch] = acc[ch] / hw
  }
}

function exciteInto(z: Float32Array, n: number, c: number, wt: WeightArgs, out: Float32Array): void {
  const { w1, b1, w2, b2, cr } = wt
  const hidden = new Float64Array(cr)
  for (let b = 0; b < n; b++) {
    const zo = b * c
    for (let j = 0; j < cr; j++) {
      let s = b1 ? b1[j] : 0
      const row = j * c
      for (let i = 0; i < c; i++) s += w1[row + i] * z[zo + i]
      hidden[j] = s > 0 ? s : 0
    }
    for (let ch = 0; ch < c; ch++) {
      let s = b2 ? b2[ch] : 0
      const row = ch * cr
      for (let j = 0; j < cr; j++) s += w2[row + j] * hidden[j]
      out[zo + ch] = 1 / (1 + Math.exp(-s))
    }
  }
}

// Every kernel below writes out[i] right after reading x[i] and residual[i] and never
// reads index i again, which is what makes out === x and out === residual safe. One loop
// nest per residual/ReLU combination keeps the innermost loops branch-free.
// ReLU as `v < 0 ? 0 : v` lets NaN through, as torch.relu does.

function scaleInto(a: ScaleCommonArgs, gates: Float32Array, out: Float32Array): void {
  const { x, n, c, hw, residual: r, relu } = a
  if (a.layout === 'nchw') {
    if (r) {
      if (relu) nchwReluResidual(x, r, gates, out, n * c, hw)
      else nchwResidual(x, r, gates, out, n * c, hw)
    } else if (relu) nchwRelu(x, gates, out, n * c, hw)
    else nchwPlain(x, gates, out, n * c, hw)
  } else if (r) {
    if (relu) nhwcReluResidual(x, r, gates, out, n, c, hw)
    else nhwcResidual(x, r, gates, out, n, c, hw)
  } else if (relu) nhwcRelu(x, gates, out, n, c, hw)
  else nhwcPlain(x, gates, out, n, c, hw)
}

// NCHW: one gate per contiguous plane of hw elements.

function nchwPlain(x: Float32Array, gates: Float32Array, out: Float32Array, planes: number, hw: number): void {
  for (let p = 0, i = 0; p < planes; p++) {
    const g = gates[p]
    for (const end = i + hw; i < end; i++) out[i] = x[i] * g
  }
}

function nchwRelu(x: Float32Array, gates: Float32Array, out: Float32Array, planes: number, hw: number): void {
  for (let p = 0, i = 0; p < planes; p++) {
    const g = gates[p]
    for (const end = i + hw; i < end; i++) {
      const v = x[i] * g
      out[i] = v < 0 ? 0 : v
    }
  }
}

function nchwResidual(
  x: Float32Array,
  r: Float32Array,
  gates: Float32Array,
  out: Float32Array,
  planes: number,
  hw: number,
): void {
  for (let p = 0, i = 0; p < planes; p++) {
    const g = gates[p]
    for (const end = i + hw; i < end; i++) out[i] = x[i] * g + r[i]
  }
}

function nchwReluResidual(
  x: Float32Array,
  r: Float32Array,
  gates: Float32Array,
  out: Float32Array,
  planes: number,
  hw: number,
): void {
  for (let p = 0, i = 0; p < planes; p++) {
    const g = gates[p]
    for (const end = i + hw; i < end; i++) {
      const v = x[i] * g + r[i]
      out[i] = v < 0 ? 0 : v
    }
  }
}

// NHWC: the gate changes with every element; walk each pixel row against the sample's
// gate row, four channels per step (about 20% faster in V8 than one: fewer loop tests).
// In place stays safe: the four writes follow the four reads of the same indices.

function nhwcPlain(x: Float32Array, gates: Float32Array, out: Float32Array, n: number, c: number, hw: number): void {
  for (let b = 0, i = 0; b < n; b++) {
    const g = gates.subarray(b * c, b * c + c)
    for (let p = 0; p < hw; p++) {
      let k = 0
      for (; k + 3 < c; k += 4, i += 4) {
        out[i] = x[i] * g[k]
        out[i + 1] = x[i + 1] * g[k + 1]
        out[i + 2] = x[i + 2] * g[k + 2]
        out[i + 3] = x[i + 3] * g[k + 3]
      }
      for (; k < c; k++, i++) out[i] = x[i] * g[k]
    }
  }
}

function nhwcRelu(x: Float32Array, gates: Float32Array, out: Float32Array, n: number, c: number, hw: number): void {
  for (let b = 0, i = 0; b < n; b++) {
    const g = gates.subarray(b * c, b * c + c)
    for (let p = 0; p < hw; p++) {
      let k = 0
      for (; k + 3 < c; k += 4, i += 4) {
        const v0 = x[i] * g[k]
        const v1 = x[i + 1] * g[k + 1]
        const v2 = x[i + 2] * g[k + 2]
        const v3 = x[i + 3] * g[k + 3]
        out[i] = v0 < 0 ? 0 : v0
        out[i + 1] = v1 < 0 ? 0 : v1
        out[i + 2] = v2 < 0 ? 0 : v2
        out[i + 3] = v3 < 0 ? 0 : v3
      }
      for (; k < c; k++, i++) {
        const v = x[i] * g[k]
        out[i] = v < 0 ? 0 : v
      }
    }
  }
}

function nhwcResidual(
  x: Float32Array,
  r: Float32Array,
  gates: Float32Array,
  out: Float32Array,
  n: number,
  c: number,
  hw: number,
): void {
  for (let b = 0, i = 0; b < n; b++) {
    const g = gates.subarray(b * c, b * c + c)
    for (let p = 0; p < hw; p++) {
      let k = 0
      for (; k + 3 < c; k += 4, i += 4) {
        out[i] = x[i] * g[k] + r[i]
        out[i + 1] = x[i + 1] * g[k + 1] + r[i + 1]
        out[i + 2] = x[i + 2] * g[k + 2] + r[i + 2]
        out[i + 3] = x[i + 3] * g[k + 3] + r[i + 3]
      }
      for (; k < c; k++, i++) out[i] = x[i] * g[k] + r[i]
    }
  }
}

function nhwcReluResidual(
  x: Float32Array,
  r: Float32Array,
  gates: Float32Array,
  out: Float32Array,
  n: number,
  c: number,
  hw: number,
): void {
  for (let b = 0, i = 0; b < n; b++) {
    const g = gates.subarray(b * c, b * c + c)
    for (let p = 0; p < hw; p++) {
      let k = 0
      for (; k + 3 < c; k += 4, i += 4) {
        const v0 = x[i] * g[k] + r[i]
        const v1 = x[i + 1] * g[k + 1] + r[i + 1]
        const v2 = x[i + 2] * g[k + 2] + r[i + 2]
        const v3 = x[i + 3] * g[k + 3] + r[i + 3]
        out[i] = v0 < 0 ? 0 : v0
        out[i + 1] = v1 < 0 ? 0 : v1
        out[i + 2] = v2 < 0 ? 0 : v2
        out[i + 3] = v3 < 0 ? 0 : v3
      }
      for (; k < c; k++, i++) {
        const v = x[i] * g[k] + r[i]
        out[i] = v < 0 ? 0 : v
      }
    }
  }
}
