/**
 * Shared material for `se.spec.ts`: the backends under test, seeded inputs, float64
 * reference implementations (independent of `lib/`), error bounds, and the table of
 * invalid calls. Nothing here depends on which backend runs.
 *
 * Tolerances are forward error bounds computed alongside each reference value, so a
 * check fails only when a result is further from the exact value than float32
 * arithmetic can explain. With u = 2⁻²⁴ (float32 unit roundoff):
 * - squeeze: |Δz| ≤ 1e-6·mean|x| + u·|z|. The JS backend sums in float64 (error: the
 *   final rounding only). The native one sums in float32 lanes, ≤ 16 adds per lane per
 *   block, blocks added in float64: ≤ ~(16 + 6)·u ≈ 1.3e-6 relative to mean|x| in the
 *   very worst case, ~√22·u ≈ 3e-7 in practice (measured: ≤ 2e-7).
 * - excite: each dot product of K terms (+ bias) within 2·√K·u·Σ|terms| (see `gamma`),
 *   plus the error already in its inputs times |weights| (added linearly: no
 *   cancellation assumed); ReLU is 1-Lipschitz, the sigmoid's slope is ≤ 1/4, and 1e-6
 *   absolute is allowed for evaluating the sigmoid itself (a vectorised exp).
 * - scale: y = x·g [+ r] rounded at most twice: 2u·(|x·g| + |r|), plus |x|·Δg when the
 *   gates are themselves approximate (seBlock); ReLU adds nothing (1-Lipschitz).
 * Comparisons against PyTorch's float32 outputs allow twice the bound (both results
 * are within one bound of the exact value).
 */

import type { ExciteOptions, Layout, ScaleOptions, SEWeights, Shape4, SimdLevelName, SqueezeOptions } from '../../lib/types'

/** The public API both backends implement. */
export interface SEApi {
  squeeze(x: Float32Array, shape: Shape4, opts?: SqueezeOptions): Float32Array
  excite(z: Float32Array, n: number, weights: SEWeights, opts?: ExciteOptions): Float32Array
  scale(x: Float32Array, shape: Shape4, gates: Float32Array, opts?: ScaleOptions): Float32Array
  seBlock(x: Float32Array, shape: Shape4, weights: SEWeights, opts?: ScaleOptions): Float32Array
  seBlockAsync(x: Float32Array, shape: Shape4, weights: SEWeights, opts?: ScaleOptions): Promise<Float32Array>
  setNumThreads(n: number): void
  getNumThreads(): number
  simdLevel(): SimdLevelName
  /** Native only: lower the instruction set (for testing every kernel variant). */
  setSimdLevel?(level: string): void
  /** Native only: the levels this CPU can run. */
  supportedSimdLevels?(): string[]
}

export interface Backend {
  name: 'js' | 'native'
  api: SEApi
}

/** The JS backend always; the native one only if it loads (see `nativeLoadError`). */
export const backends: Backend[] = [{ name: 'js', api: require('../../lib/js') as SEApi }]

/** Why the native backend did not load, or undefined if it did. */
export let nativeLoadError: unknown
try {
  backends.push({ name: 'native', api: require('../../lib/index') as SEApi })
} catch (err) {
  nativeLoadError = err
}

export const U = 2 ** -24
export const SQUEEZE_REL = 1e-6
export const SIGMOID_ABS = 1e-6

/**
 * Rounding allowance for a K-term dot product, relative to Σ|terms|: Higham & Mary's
 * probabilistic bound λ·√K·u with λ = 2 ("A New Approach to Probabilistic Rounding Error
 * Analysis", SISC 2019). The worst-case K·u would be √K/2 times looser (23× at K = 2048)
 * and would let gate errors of 1e-3 pass unnoticed.
 */
const gamma = (k: number) => 2 * Math.sqrt(k) * U
/** Absolute floor for results in float32's subnormal range. */
const TINY = 2 ** -148

// --- seeded data ---------------------------------------------------------------------

/** mulberry32: a small, fast, well-mixed 32-bit generator; returns uniforms in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed | 0
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * An activation in storage order: uniform noise in [−1, 1) plus a per-channel offset in
 * [−1, 1), so that channel means (hence gates) are spread out. The noise is a 32-bit LCG
 * (one multiply-add per element: the grid fills up to 51M elements); its low-quality
 * low bits do not matter at float32 precision.
 */
export function randomActivation(shape: Shape4, layout: Layout, seed: number): Float32Array {
  const [n, c, h, w] = shape
  const hw = h * w
  const r = rng(seed)
  const offset = Float64Array.from({ length: c }, () => 2 * r() - 1)
  const x = new Float32Array(n * c * hw)
  let s = (r() * 4294967296) | 0
  const k = 2 ** -31
  let i = 0
  if (layout === 'nchw') {
    for (let b = 0; b < n; b++)
      for (let ch = 0; ch < c; ch++) {
        const o = offset[ch]
        for (let p = 0; p < hw; p++) {
          s = (Math.imul(s, 1664525) + 1013904223) | 0
          x[i++] = s * k + o
        }
      }
  } else {
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++)
        for (let ch = 0; ch < c; ch++) {
          s = (Math.imul(s, 1664525) + 1013904223) | 0
          x[i++] = s * k + offset[ch]
        }
  }
  return x
}

/** Excitation weights at roughly PyTorch-init scale, widened so gates span ~(0.1, 0.9). */
export function randomWeights(c: number, cr: number, biases: boolean, seed: number): SEWeights {
  const r = rng(seed)
  const uni = (len: number, bound: number) => Float32Array.from({ length: len }, () => (2 * r() - 1) * bound)
  const w1 = uni(cr * c, 3 / Math.sqrt(c))
  const w2 = uni(c * cr, 2 / Math.sqrt(cr))
  return biases ? { w1, b1: uni(cr, 0.5), w2, b2: uni(c, 0.5) } : { w1, w2 }
}

/** NCHW → NHWC copy. */
export function toNHWC(x: Float32Array, [n, c, h, w]: Shape4): Float32Array {
  const hw = h * w
  const y = new Float32Array(x.length)
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < hw; p++) y[(b * hw + p) * c + ch] = x[(b * c + ch) * hw + p]
  return y
}

// --- float64 references with error bounds ------------------------------------------------

export interface Ref {
  value: Float64Array
  tol: Float64Array
}

/** Exact (float64) channel means, with the squeeze bound. */
export function refSqueeze(x: Float32Array, [n, c, h, w]: Shape4, layout: Layout): Ref {
  const hw = h * w
  const sum = new Float64Array(n * c)
  const abs = new Float64Array(n * c)
  if (layout === 'nchw') {
    for (let k = 0; k < n * c; k++) {
      let s = 0
      let a = 0
      for (let i = k * hw; i < (k + 1) * hw; i++) {
        s += x[i]
        a += Math.abs(x[i])
      }
      sum[k] = s
      abs[k] = a
    }
  } else {
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++)
        for (let ch = 0; ch < c; ch++) {
          const v = x[(b * hw + p) * c + ch]
          sum[b * c + ch] += v
          abs[b * c + ch] += Math.abs(v)
        }
  }
  const value = sum.map((s) => s / hw)
  const tol = value.map((z, k) => SQUEEZE_REL * (abs[k] / hw) + U * Math.abs(z) + TINY)
  return { value, tol }
}

/**
 * Float64 excitation of `z` ([n, C]); `zTol` is the error the computing backend may
 * already have in its z (omit when z is given exactly).
 */
export function refExcite(z: ArrayLike<number>, zTol: ArrayLike<number> | undefined, n: number, wt: SEWeights): Ref {
  const c = z.length / n
  const cr = wt.w1.length / c
  const value = new Float64Array(n * c)
  const tol = new Float64Array(n * c)
  const hid = new Float64Array(cr)
  const hidErr = new Float64Array(cr)
  for (let b = 0; b < n; b++) {
    for (let j = 0; j < cr; j++) {
      let s = wt.b1 ? wt.b1[j] : 0
      let mag = Math.abs(s)
      let prop = 0
      for (let i = 0; i < c; i++) {
        const wv = wt.w1[j * c + i]
        const t = wv * z[b * c + i]
        s += t
        mag += Math.abs(t)
        if (zTol) prop += Math.abs(wv) * zTol[b * c + i]
      }
      hid[j] = Math.max(s, 0)
      hidErr[j] = prop + gamma(c + 1) * mag
    }
    for (let ch = 0; ch < c; ch++) {
      let s = wt.b2 ? wt.b2[ch] : 0
      let mag = Math.abs(s)
      let prop = 0
      for (let j = 0; j < cr; j++) {
        const wv = wt.w2[ch * cr + j]
        const t = wv * hid[j]
        s += t
        mag += Math.abs(t)
        prop += Math.abs(wv) * hidErr[j]
      }
      const g = 1 / (1 + Math.exp(-s))
      value[b * c + ch] = g
      tol[b * c + ch] = 0.25 * (prop + gamma(cr + 1) * mag) + SIGMOID_ABS + U * g
    }
  }
  return { value, tol }
}

/** Result of a comparison: the worst element relative to its bound. */
export interface Report {
  ok: boolean
  /** max |actual − expected| / tol (Infinity for a NaN mismatch). */
  worstRatio: number
  message: string
}

class Worst {
  ratio = 0
  index = -1
  actual = 0
  expected = 0
  tol = 0
  see(i: number, actual: number, expected: number, tol: number): void {
    const d = Math.abs(actual - expected)
    if (d <= this.ratio * tol) return
    const r = d === d ? d / tol : Infinity // NaN on either side fails
    if (r > this.ratio) {
      this.ratio = r
      this.index = i
      this.actual = actual
      this.expected = expected
      this.tol = tol
    }
  }
  report(what: string): Report {
    const ok = this.ratio <= 1
    const message = ok
      ? `${what}: worst error ${this.ratio.toFixed(3)}× the bound`
      : `${what}: element ${this.index} is ${this.actual}, expected ${this.expected} ± ${this.tol} ` +
        `(error ${(Math.abs(this.actual - this.expected) / this.tol).toPrecision(3)}× the bound)`
    return { ok, worstRatio: this.ratio, message }
  }
}

/** Elementwise |actual − expected| ≤ factor·tol. */
export function compare(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: ArrayLike<number>,
  factor = 1,
): Report {
  if (actual.length !== expected.length) {
    return { ok: false, worstRatio: Infinity, message: `${what}: length ${actual.length}, expected ${expected.length}` }
  }
  const worst = new Worst()
  for (let i = 0; i < actual.length; i++) worst.see(i, actual[i], expected[i], factor * tol[i])
  return worst.report(what)
}

export interface ScaleRefInput {
  x: Float32Array
  shape: Shape4
  layout: Layout
  /** Per-(n, c) gates, exact or float64. */
  gates: ArrayLike<number>
  /** Error already in the gates the backend used (omit when they were given exactly). */
  gatesTol?: ArrayLike<number>
  residual?: Float32Array
  relu: boolean
}

/**
 * Checks a scale/seBlock output against `act(x·g [+ r])` computed in float64, element by
 * element without materialising the reference (the grid reaches 51M elements).
 * With `against` (e.g. PyTorch's output), `actual` is compared with that array instead
 * of the exact value, within `factor`× the bound.
 */
export function checkScale(what: string, actual: Float32Array, ref: ScaleRefInput, against?: Float32Array, factor = 1): Report {
  const { x, shape, layout, gates, residual, relu } = ref
  const [n, c, h, w] = shape
  const hw = h * w
  if (actual.length !== x.length) {
    return { ok: false, worstRatio: Infinity, message: `${what}: length ${actual.length}, expected ${x.length}` }
  }
  const gatesTol = ref.gatesTol ?? new Float64Array(n * c)
  const worst = new Worst()
  const one = (i: number, k: number): void => {
    const xv = x[i]
    const xg = xv * gates[k]
    const r = residual ? residual[i] : 0
    let v = xg + r
    if (relu && v < 0) v = 0
    const tol = factor * (Math.abs(xv) * gatesTol[k] + 2 * U * (Math.abs(xg) + Math.abs(r)) + TINY)
    const e = against ? against[i] : v
    const d = Math.abs(actual[i] - e)
    // Worst.see only when an element is worse than the worst so far (this runs over up
    // to 51M elements).
    if (!(d <= worst.ratio * tol)) worst.see(i, actual[i], e, tol)
  }
  if (layout === 'nchw') {
    for (let k = 0; k < n * c; k++) for (let i = k * hw; i < (k + 1) * hw; i++) one(i, k)
  } else {
    for (let b = 0; b < n; b++)
      for (let p = 0; p < hw; p++) {
        const base = (b * hw + p) * c
        for (let ch = 0; ch < c; ch++) one(base + ch, b * c + ch)
      }
  }
  return worst.report(what)
}

/** Exact reference of a whole SE block: gates with their propagated bound. */
export function refGates(x: Float32Array, shape: Shape4, layout: Layout, wt: SEWeights, squeezed?: Ref): Ref {
  const z = squeezed ?? refSqueeze(x, shape, layout)
  const g = refExcite(z.value, z.tol, shape[0], wt)
  // The backend stores gates as float32 before scaling.
  return { value: g.value, tol: g.tol.map((t, k) => t + U * g.value[k]) }
}

export function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length === b.length &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  )
}

// --- the grid ----------------------------------------------------------------------------

/** Cr per C: C/16, except 72 → 8 (timm's make_divisible(72/16, 8); not C/r for any integer r). */
export const GRID_CR: Record<number, number> = { 64: 4, 72: 8, 256: 16, 2048: 128 }
export const GRID_C = [64, 72, 256, 2048]
export const GRID_HW: [number, number][] = [
  [1, 1],
  [7, 7],
  [13, 17],
  [56, 56],
]
export const GRID_N = [1, 3, 8]
export const LAYOUTS: Layout[] = ['nchw', 'nhwc']

/** Moderate shapes on which every option combination runs: [shape, Cr]. */
export const OPTION_SHAPES: [Shape4, number][] = [
  [[3, 72, 13, 17], 8],
  [[2, 64, 7, 7], 64], // r = 1
  [[1, 24, 28, 28], 1], // Cr = 1
]

/** How `out` is passed: absent, a fresh buffer, `x` itself, `residual` itself. */
export type OutMode = 'none' | 'fresh' | 'x' | 'residual'

// --- invalid calls -----------------------------------------------------------------------

export type Fn = 'squeeze' | 'excite' | 'scale' | 'seBlock'

/** Arguments of one call, deliberately untyped so that cases can break them. */
export interface CallArgs {
  x: unknown
  shape: unknown
  gates: unknown
  z: unknown
  n: unknown
  weights: unknown
  opts: unknown
  /** The sentinel-filled output buffer passed as `opts.out` (checked untouched). */
  out: Float32Array
}

export const SENTINEL = -12345.5
/** Base shape of the error cases: N=2, C=8, H=3, W=5, Cr=2. */
export const ERR_SHAPE: Shape4 = [2, 8, 3, 5]
const ERR_LEN = 2 * 8 * 3 * 5

/** Valid arguments for `fn`, with a sentinel-filled `out` of the right size. */
export function validArgs(fn: Fn): CallArgs {
  const [n, c] = ERR_SHAPE
  const out = new Float32Array(fn === 'squeeze' || fn === 'excite' ? n * c : ERR_LEN).fill(SENTINEL)
  const opts: Record<string, unknown> =
    fn === 'squeeze'
      ? { layout: 'nhwc', out }
      : fn === 'excite'
        ? { out }
        : { layout: 'nchw', out, residual: randomActivation(ERR_SHAPE, 'nchw', 7), relu: true }
  return {
    x: randomActivation(ERR_SHAPE, 'nchw', 5),
    shape: [...ERR_SHAPE],
    gates: new Float32Array(n * c).fill(0.5),
    z: new Float32Array(n * c).fill(0.25),
    n,
    weights: randomWeights(c, 2, true, 9),
    opts,
    out,
  }
}

export function call(api: SEApi, fn: Fn | 'seBlockAsync', a: CallArgs): unknown {
  const f = api as unknown as Record<string, (...args: unknown[]) => unknown>
  switch (fn) {
    case 'squeeze':
      return f.squeeze(a.x, a.shape, a.opts)
    case 'excite':
      return f.excite(a.z, a.n, a.weights, a.opts)
    case 'scale':
      return f.scale(a.x, a.shape, a.gates, a.opts)
    default:
      return f[fn](a.x, a.shape, a.weights, a.opts)
  }
}

export interface ErrorCase {
  title: string
  fns: readonly Fn[]
  error: typeof TypeError | typeof RangeError
  /** The argument the message must name. */
  names: RegExp
  mutate(a: CallArgs): void
}

const X_FNS = ['squeeze', 'scale', 'seBlock'] as const
const SCALE_FNS = ['scale', 'seBlock'] as const
const W_FNS = ['excite', 'seBlock'] as const
const ALL_FNS = ['squeeze', 'excite', 'scale', 'seBlock'] as const

const opts = (a: CallArgs) => a.opts as Record<string, unknown>
const weights = (a: CallArgs) => a.weights as Record<string, unknown>
const shapeWith = (i: number, v: unknown) => (a: CallArgs) => {
  ;(a.shape as unknown[])[i] = v
}

/** Every invalid call; each breaks exactly one thing in otherwise valid arguments. */
export const ERROR_CASES: ErrorCase[] = [
  // x
  { title: 'x is a plain array', fns: X_FNS, error: TypeError, names: /\bx\b/, mutate: (a) => void (a.x = Array.from(a.x as Float32Array)) },
  { title: 'x is a Float64Array', fns: X_FNS, error: TypeError, names: /\bx\b/, mutate: (a) => void (a.x = Float64Array.from(a.x as Float32Array)) },
  { title: 'x is undefined', fns: X_FNS, error: TypeError, names: /\bx\b/, mutate: (a) => void (a.x = undefined) },
  { title: 'x is a Buffer', fns: X_FNS, error: TypeError, names: /\bx\b/, mutate: (a) => void (a.x = Buffer.alloc(ERR_LEN * 4)) },
  { title: 'x one element short', fns: X_FNS, error: RangeError, names: /\bx\.length must be 240\b.*got 239/, mutate: (a) => void (a.x = (a.x as Float32Array).subarray(1)) },
  { title: 'x one element long', fns: X_FNS, error: RangeError, names: /\bx\.length\b.*got 241/, mutate: (a) => void (a.x = new Float32Array(ERR_LEN + 1)) },
  // shape
  { title: 'shape is not an array', fns: X_FNS, error: TypeError, names: /\bshape\b/, mutate: (a) => void (a.shape = '2,8,3,5') },
  { title: 'shape is an Int32Array', fns: X_FNS, error: TypeError, names: /\bshape\b/, mutate: (a) => void (a.shape = Int32Array.from(ERR_SHAPE)) },
  { title: 'shape is undefined', fns: X_FNS, error: TypeError, names: /\bshape\b/, mutate: (a) => void (a.shape = undefined) },
  { title: 'shape has 3 dims', fns: X_FNS, error: RangeError, names: /\bshape\b/, mutate: (a) => void (a.shape = [2, 8, 15]) },
  { title: 'shape has 5 dims', fns: X_FNS, error: RangeError, names: /\bshape\b/, mutate: (a) => void (a.shape = [2, 8, 3, 5, 1]) },
  { title: 'shape dim is a string', fns: X_FNS, error: TypeError, names: /\bshape\[1\]/, mutate: shapeWith(1, '8') },
  { title: 'shape dim is a bigint', fns: X_FNS, error: TypeError, names: /\bshape\[0\]/, mutate: shapeWith(0, 2n) },
  { title: 'shape dim is zero', fns: X_FNS, error: RangeError, names: /\bshape\[2\]/, mutate: shapeWith(2, 0) },
  { title: 'shape dim is negative', fns: X_FNS, error: RangeError, names: /\bshape\[3\]/, mutate: shapeWith(3, -5) },
  { title: 'shape dim is fractional', fns: X_FNS, error: RangeError, names: /\bshape\[1\]/, mutate: shapeWith(1, 8.5) },
  { title: 'shape dim is NaN', fns: X_FNS, error: RangeError, names: /\bshape\[0\]/, mutate: shapeWith(0, NaN) },
  { title: 'shape dim is Infinity', fns: X_FNS, error: RangeError, names: /\bshape\[2\]/, mutate: shapeWith(2, Infinity) },
  { title: 'shape dim is 2^53', fns: X_FNS, error: RangeError, names: /\bshape\[0\]/, mutate: shapeWith(0, 2 ** 53) },
  { title: 'shape overflows', fns: X_FNS, error: RangeError, names: /\bshape\b/, mutate: (a) => void (a.shape = [65536, 65536, 1, 1]) },
  { title: 'shape overflows with small factors', fns: X_FNS, error: RangeError, names: /\bshape\b/, mutate: (a) => void (a.shape = [4096, 4096, 4096, 4096]) },
  // gates
  { title: 'gates is a plain array', fns: ['scale'], error: TypeError, names: /\bgates\b/, mutate: (a) => void (a.gates = [0.5]) },
  { title: 'gates is missing', fns: ['scale'], error: TypeError, names: /\bgates\b/, mutate: (a) => void (a.gates = undefined) },
  { title: 'gates too short', fns: ['scale'], error: RangeError, names: /\bgates\.length must be 16\b/, mutate: (a) => void (a.gates = new Float32Array(15)) },
  { title: 'gates of length N·C·H·W', fns: ['scale'], error: RangeError, names: /\bgates\.length\b/, mutate: (a) => void (a.gates = new Float32Array(ERR_LEN)) },
  // residual / out / relu / layout
  { title: 'residual is a Float64Array', fns: SCALE_FNS, error: TypeError, names: /\bopts\.residual\b/, mutate: (a) => void (opts(a).residual = new Float64Array(ERR_LEN)) },
  { title: 'residual is null', fns: SCALE_FNS, error: TypeError, names: /\bopts\.residual\b/, mutate: (a) => void (opts(a).residual = null) },
  { title: 'residual too short', fns: SCALE_FNS, error: RangeError, names: /\bopts\.residual\.length must be 240\b/, mutate: (a) => void (opts(a).residual = new Float32Array(ERR_LEN - 1)) },
  { title: 'out is a plain array', fns: ALL_FNS, error: TypeError, names: /\bopts\.out\b/, mutate: (a) => void (opts(a).out = []) },
  { title: 'out is null', fns: ALL_FNS, error: TypeError, names: /\bopts\.out\b/, mutate: (a) => void (opts(a).out = null) },
  { title: 'out too short', fns: ALL_FNS, error: RangeError, names: /\bopts\.out\.length\b/, mutate: (a) => void (opts(a).out = a.out.subarray(1)) },
  { title: 'out too long', fns: ALL_FNS, error: RangeError, names: /\bopts\.out\.length\b/, mutate: (a) => void (opts(a).out = new Float32Array(a.out.length + 1)) },
  {
    title: 'out partially overlaps x',
    fns: SCALE_FNS,
    error: RangeError,
    names: /\bopts\.out\b.*\bx\b/,
    mutate: (a) => {
      const buf = new Float32Array(ERR_LEN + 4)
      a.x = buf.subarray(0, ERR_LEN)
      opts(a).out = buf.subarray(4)
    },
  },
  {
    title: 'out partially overlaps residual',
    fns: SCALE_FNS,
    error: RangeError,
    names: /\bopts\.out\b.*\bopts\.residual\b/,
    mutate: (a) => {
      const buf = new Float32Array(ERR_LEN + 1)
      opts(a).residual = buf.subarray(1)
      opts(a).out = buf.subarray(0, ERR_LEN)
    },
  },
  {
    title: 'out is x but residual partially overlaps x',
    fns: SCALE_FNS,
    error: RangeError,
    names: /\bopts\.out\b.*\bopts\.residual\b/,
    mutate: (a) => {
      const buf = new Float32Array(ERR_LEN + 8)
      a.x = buf.subarray(0, ERR_LEN)
      opts(a).out = a.x
      opts(a).residual = buf.subarray(8)
    },
  },
  {
    title: 'out overlaps gates',
    fns: ['scale'],
    error: RangeError,
    names: /\bopts\.out\b.*\bgates\b/,
    mutate: (a) => {
      a.gates = a.out.subarray(0, 16)
    },
  },
  {
    title: 'out overlaps a weight',
    fns: ['seBlock'],
    error: RangeError,
    names: /\bopts\.out\b.*\bweights\.b2\b/,
    mutate: (a) => {
      weights(a).b2 = a.out.subarray(100, 108)
    },
  },
  {
    title: 'squeeze out inside x',
    fns: ['squeeze'],
    error: RangeError,
    names: /\bopts\.out\b.*\bx\b/,
    mutate: (a) => {
      const x = a.x as Float32Array
      opts(a).out = x.subarray(0, 16)
    },
  },
  {
    title: 'excite out is z',
    fns: ['excite'],
    error: RangeError,
    names: /\bopts\.out\b.*\bz\b/,
    mutate: (a) => {
      opts(a).out = a.z
    },
  },
  { title: 'relu is a string', fns: SCALE_FNS, error: TypeError, names: /\bopts\.relu\b/, mutate: (a) => void (opts(a).relu = 'yes') },
  { title: 'relu is 1', fns: SCALE_FNS, error: TypeError, names: /\bopts\.relu\b/, mutate: (a) => void (opts(a).relu = 1) },
  { title: 'layout unknown', fns: [...X_FNS], error: RangeError, names: /\bopts\.layout\b/, mutate: (a) => void (opts(a).layout = 'chwn') },
  { title: 'layout upper case', fns: [...X_FNS], error: RangeError, names: /\bopts\.layout\b/, mutate: (a) => void (opts(a).layout = 'NCHW') },
  { title: 'layout not a string', fns: [...X_FNS], error: TypeError, names: /\bopts\.layout\b/, mutate: (a) => void (opts(a).layout = 0) },
  // opts
  { title: 'opts is null', fns: ALL_FNS, error: TypeError, names: /\bopts\b/, mutate: (a) => void (a.opts = null) },
  { title: 'opts is a string', fns: ALL_FNS, error: TypeError, names: /\bopts\b/, mutate: (a) => void (a.opts = 'nhwc') },
  { title: 'opts is an array', fns: ALL_FNS, error: TypeError, names: /\bopts\b/, mutate: (a) => void (a.opts = []) },
  { title: 'opts is the out buffer itself', fns: ALL_FNS, error: TypeError, names: /\bopts\b/, mutate: (a) => void (a.opts = a.out) },
  { title: 'opts has a misspelt key', fns: ALL_FNS, error: TypeError, names: /\bopts\.layuot\b/, mutate: (a) => void (opts(a).layuot = 'nhwc') },
  { title: 'excite opts has layout', fns: ['excite'], error: TypeError, names: /\bopts\.layout\b/, mutate: (a) => void (opts(a).layout = 'nchw') },
  { title: 'squeeze opts has relu', fns: ['squeeze'], error: TypeError, names: /\bopts\.relu\b/, mutate: (a) => void (opts(a).relu = true) },
  // weights
  { title: 'weights is null', fns: W_FNS, error: TypeError, names: /\bweights\b/, mutate: (a) => void (a.weights = null) },
  { title: 'weights is a Float32Array', fns: W_FNS, error: TypeError, names: /\bweights\b/, mutate: (a) => void (a.weights = new Float32Array(32)) },
  { title: 'w1 missing', fns: W_FNS, error: TypeError, names: /\bweights\.w1\b/, mutate: (a) => void delete weights(a).w1 },
  { title: 'w2 is a plain array', fns: W_FNS, error: TypeError, names: /\bweights\.w2\b/, mutate: (a) => void (weights(a).w2 = Array.from(weights(a).w2 as Float32Array)) },
  { title: 'w1 is a Float64Array', fns: W_FNS, error: TypeError, names: /\bweights\.w1\b/, mutate: (a) => void (weights(a).w1 = new Float64Array(16)) },
  { title: 'b1 is null', fns: W_FNS, error: TypeError, names: /\bweights\.b1\b/, mutate: (a) => void (weights(a).b1 = null) },
  { title: 'b2 is a number', fns: W_FNS, error: TypeError, names: /\bweights\.b2\b/, mutate: (a) => void (weights(a).b2 = 0) },
  { title: 'w1 length not a multiple of C', fns: W_FNS, error: RangeError, names: /\bweights\.w1\.length\b.*C = 8\b/, mutate: (a) => void (weights(a).w1 = new Float32Array(17)) },
  { title: 'w1 empty', fns: W_FNS, error: RangeError, names: /\bweights\.w1\.length\b/, mutate: (a) => void (weights(a).w1 = new Float32Array(0)) },
  { title: 'w2 length not C·Cr', fns: W_FNS, error: RangeError, names: /\bweights\.w2\.length must be 16\b/, mutate: (a) => void (weights(a).w2 = new Float32Array(24)) },
  {
    title: 'w1 and w2 agree with each other but not with C',
    fns: W_FNS,
    error: RangeError,
    names: /\bweights\.w1\.length\b/,
    mutate: (a) => {
      weights(a).w1 = new Float32Array(20)
      weights(a).w2 = new Float32Array(20)
    },
  },
  { title: 'b1 length not Cr', fns: W_FNS, error: RangeError, names: /\bweights\.b1\.length must be 2\b/, mutate: (a) => void (weights(a).b1 = new Float32Array(8)) },
  { title: 'b2 length not C', fns: W_FNS, error: RangeError, names: /\bweights\.b2\.length must be 8\b/, mutate: (a) => void (weights(a).b2 = new Float32Array(2)) },
  // excite's z and n
  { title: 'z is a Float64Array', fns: ['excite'], error: TypeError, names: /\bz\b/, mutate: (a) => void (a.z = new Float64Array(16)) },
  { title: 'z.length not a multiple of n', fns: ['excite'], error: RangeError, names: /\bz\.length\b/, mutate: (a) => void (a.z = new Float32Array(15)) },
  { title: 'n is a string', fns: ['excite'], error: TypeError, names: /\bn\b/, mutate: (a) => void (a.n = '2') },
  { title: 'n is zero', fns: ['excite'], error: RangeError, names: /\bn\b/, mutate: (a) => void (a.n = 0) },
  { title: 'n is negative', fns: ['excite'], error: RangeError, names: /\bn\b/, mutate: (a) => void (a.n = -2) },
  { title: 'n is fractional', fns: ['excite'], error: RangeError, names: /\bn\b/, mutate: (a) => void (a.n = 1.5) },
  { title: 'n is NaN', fns: ['excite'], error: RangeError, names: /\bn\b/, mutate: (a) => void (a.n = NaN) },
  // n = 4 makes C = z.length / n = 4, so Cr = w1.length / C = 4: w2 (16 = C·Cr) still
  // fits, b1 (length 2) no longer does.
  { title: 'n inconsistent with the weights', fns: ['excite'], error: RangeError, names: /\bweights\.b1\.length\b/, mutate: (a) => void (a.n = 4) },
]

/** Invalid `setNumThreads` arguments. */
export const THREAD_ERRORS: [unknown, typeof TypeError | typeof RangeError][] = [
  [0, RangeError],
  [-1, RangeError],
  [1.5, RangeError],
  [257, RangeError],
  [NaN, RangeError],
  [Infinity, RangeError],
  ['2', TypeError],
  [undefined, TypeError],
  [2n, TypeError],
]
