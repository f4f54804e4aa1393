/**
 * Argument validation for the SE operations, shared by both backends: the pure-JS
 * kernels (`lib/js/se.ts`) and the native wrapper (`lib/index.ts`), which calls these
 * functions before anything crosses into Rust. Both backends therefore accept and
 * reject exactly the same calls, with the same messages.
 *
 * Each `prepare*` function checks every argument and returns a normalized plain object
 * (dimensions as numbers, defaults filled in, options read exactly once), or throws:
 * - `TypeError` for a value of the wrong type (a plain array or a Float64Array where a
 *   Float32Array is required, a string dimension, `opts` that is not an object, an
 *   unknown option name, a non-boolean `relu`);
 * - `RangeError` for a value of the right type but wrong value (non-integer, zero or
 *   negative dimensions, a length that does not match the shape, an unknown layout,
 *   `out` partially overlapping an input).
 * Every message names the argument (`x`, `shape[1]`, `weights.w2`, `opts.out`, …) and
 * gives the expected and the actual value. Validation reads only lengths and buffer
 * identities, never writes: nothing is touched before it succeeds.
 *
 * Aliasing contract (what the kernels may rely on after validation):
 * - `scale` / `seBlock`: `out` is either exactly `x`, exactly `residual` (same buffer,
 *   byte offset and length: element i is read before element i is written), or shares no
 *   memory with them; it never overlaps `gates` or the weights.
 * - `squeeze` / `excite`: `out` shares no memory with any input.
 * Inputs may alias each other freely (e.g. `residual === x`): they are only read.
 *
 * @packageDocumentation
 */

import { types as utilTypes } from 'util'
import type { ExciteOptions, Layout, ScaleOptions, SEWeights, Shape4, SqueezeOptions } from './types'

/**
 * Largest element count accepted for one 4-D tensor (and for `w1`/`w2`): 2³¹ − 1.
 * Comfortably above any SE activation (ResNet-152 at batch 64 is ~2·10⁸), and it lets
 * kernels of either backend index with 32-bit integers without overflow checks.
 */
export const MAX_ELEMENTS = 2 ** 31 - 1

/** Largest thread count `setNumThreads` accepts (the native pool's limit). */
export const MAX_THREADS = 256

/** Validated `squeeze` arguments. */
export interface SqueezeArgs {
  x: Float32Array
  n: number
  c: number
  h: number
  w: number
  /** h·w */
  hw: number
  layout: Layout
  /** Caller's output buffer (length n·c); absent: the backend allocates one. */
  out?: Float32Array
}

/** Validated excitation weights; `cr` = C/r is `w1.length / c`. */
export interface WeightArgs {
  w1: Float32Array
  b1?: Float32Array
  w2: Float32Array
  b2?: Float32Array
  cr: number
}

/** Validated `excite` arguments. `c` is `z.length / n`. */
export interface ExciteArgs extends WeightArgs {
  z: Float32Array
  n: number
  c: number
  /** Caller's output buffer (length n·c), disjoint from every input. */
  out?: Float32Array
}

/** Fields common to `scale` and `seBlock`. */
export interface ScaleCommonArgs {
  x: Float32Array
  n: number
  c: number
  h: number
  w: number
  /** h·w */
  hw: number
  layout: Layout
  /** Caller's output buffer (length n·c·h·w): exactly `x`, exactly `residual`, or disjoint. */
  out?: Float32Array
  residual?: Float32Array
  relu: boolean
}

/** Validated `scale` arguments. */
export interface ScaleArgs extends ScaleCommonArgs {
  gates: Float32Array
}

/** Validated `seBlock` / `seBlockAsync` arguments. */
export interface SEBlockArgs extends ScaleCommonArgs, WeightArgs {}

const DIM_NAMES = ['N', 'C', 'H', 'W'] as const
const SQUEEZE_OPTIONS = ['layout', 'out'] as const
const EXCITE_OPTIONS = ['out'] as const
const SCALE_OPTIONS = ['layout', 'out', 'residual', 'relu'] as const

/** Checks `squeeze(x, shape, opts)`. */
export function prepareSqueeze(x: unknown, shape: unknown, opts?: unknown): SqueezeArgs {
  const [n, c, h, w] = checkShape(shape)
  const o = checkOpts(opts, 'squeeze', SQUEEZE_OPTIONS)
  const xs = checkF32(x, 'x')
  checkLength(xs, 'x', n * c * h * w, `N·C·H·W for shape ${fmtShape(shape as Shape4)}`)
  const layout = checkLayout(o?.layout)
  const out = checkOptionalF32(o?.out, 'opts.out')
  if (out) {
    checkLength(out, 'opts.out', n * c, `N·C for shape ${fmtShape(shape as Shape4)}`)
    checkDisjoint(out, 'opts.out', xs, 'x')
  }
  return { x: xs, n, c, h, w, hw: h * w, layout, out }
}

/**
 * Checks `excite(z, n, weights, opts)`. There is no C argument: z is [n, C], so
 * C = z.length / n; then w1 = [Cr, C] gives Cr = w1.length / C, and w2 = [C, Cr],
 * b1 = [Cr], b2 = [C] are checked against those.
 */
export function prepareExcite(z: unknown, n: unknown, weights: unknown, opts?: unknown): ExciteArgs {
  const zs = checkF32(z, 'z')
  const nn = checkPositiveInt(n, 'n')
  if (zs.length === 0 || zs.length % nn !== 0) {
    throw new RangeError(`z.length must be a positive multiple of n = ${nn} (z is [n, C]), got ${zs.length}`)
  }
  const c = zs.length / nn
  const wts = checkWeights(weights, c, 'z.length / n')
  const o = checkOpts(opts, 'excite', EXCITE_OPTIONS)
  const out = checkOptionalF32(o?.out, 'opts.out')
  if (out) {
    checkLength(out, 'opts.out', nn * c, `N·C = z.length`)
    checkDisjoint(out, 'opts.out', zs, 'z')
    checkDisjointFromWeights(out, wts)
  }
  return { z: zs, n: nn, c, ...wts, out }
}

/** Checks `scale(x, shape, gates, opts)`. */
export function prepareScale(x: unknown, shape: unknown, gates: unknown, opts?: unknown): ScaleArgs {
  const common = checkScaleCommon(x, shape, opts, 'scale')
  const g = checkF32(gates, 'gates')
  checkLength(g, 'gates', common.n * common.c, `N·C for shape ${fmtShape(shape as Shape4)}`)
  if (common.out) checkDisjoint(common.out, 'opts.out', g, 'gates')
  return { ...common, gates: g }
}

/** Checks `seBlock(x, shape, weights, opts)` (and `seBlockAsync`). */
export function prepareSEBlock(x: unknown, shape: unknown, weights: unknown, opts?: unknown): SEBlockArgs {
  const common = checkScaleCommon(x, shape, opts, 'seBlock')
  const wts = checkWeights(weights, common.c, 'shape[1]')
  if (common.out) checkDisjointFromWeights(common.out, wts)
  return { ...common, ...wts }
}

/** Checks a `setNumThreads` argument: an integer in 1..{@link MAX_THREADS}. */
export function checkNumThreads(n: unknown): number {
  if (typeof n !== 'number') throw new TypeError(`n must be a number of threads, got ${describe(n)}`)
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new RangeError(`n must be an integer from 1 to ${MAX_THREADS} (threads), got ${n}`)
  }
  return n
}

// ---------------------------------------------------------------------------------------

function checkScaleCommon(x: unknown, shape: unknown, opts: unknown, fn: string): ScaleCommonArgs {
  const [n, c, h, w] = checkShape(shape)
  const o = checkOpts(opts, fn, SCALE_OPTIONS)
  const len = n * c * h * w
  const why = `N·C·H·W for shape ${fmtShape(shape as Shape4)}`
  const xs = checkF32(x, 'x')
  checkLength(xs, 'x', len, why)
  const layout = checkLayout(o?.layout)
  const residual = checkOptionalF32(o?.residual, 'opts.residual')
  if (residual) checkLength(residual, 'opts.residual', len, why)
  const relu = o?.relu
  if (relu !== undefined && typeof relu !== 'boolean') {
    throw new TypeError(`opts.relu must be a boolean or undefined, got ${describe(relu)}`)
  }
  const out = checkOptionalF32(o?.out, 'opts.out')
  if (out) {
    checkLength(out, 'opts.out', len, why)
    checkSameOrDisjoint(out, 'opts.out', xs, 'x')
    if (residual) checkSameOrDisjoint(out, 'opts.out', residual, 'opts.residual')
  }
  return { x: xs, n, c, h, w, hw: h * w, layout, out, residual, relu: relu === true }
}

function checkShape(shape: unknown): [number, number, number, number] {
  if (!Array.isArray(shape)) {
    throw new TypeError(`shape must be an array [N, C, H, W], got ${describe(shape)}`)
  }
  if (shape.length !== 4) {
    throw new RangeError(`shape must have 4 dimensions [N, C, H, W], got ${shape.length}`)
  }
  const dims: [number, number, number, number] = [0, 0, 0, 0]
  let count = 1
  for (let i = 0; i < 4; i++) {
    const d: unknown = shape[i]
    const name = `shape[${i}] (${DIM_NAMES[i]})`
    if (typeof d !== 'number') throw new TypeError(`${name} must be a number, got ${describe(d)}`)
    if (!Number.isSafeInteger(d) || d < 1) {
      throw new RangeError(`${name} must be a positive integer, got ${d} (shape ${fmtShape(shape)})`)
    }
    // Every factor is ≥ 1, so the running product only grows: stopping at the first
    // excess keeps it exact (far below 2^53).
    count *= d
    if (count > MAX_ELEMENTS) {
      throw new RangeError(
        `shape ${fmtShape(shape)} has more than ${MAX_ELEMENTS} elements (N·C·H·W), the largest supported tensor`,
      )
    }
    dims[i] = d
  }
  return dims
}

function checkWeights(weights: unknown, c: number, cFrom: string): WeightArgs {
  if (weights === null || typeof weights !== 'object' || Array.isArray(weights) || ArrayBuffer.isView(weights)) {
    throw new TypeError(`weights must be an object { w1, b1?, w2, b2? }, got ${describe(weights)}`)
  }
  const wt = weights as Record<string, unknown>
  // Read each property once: a getter cannot hand the kernel a different array later.
  const w1 = checkF32(wt.w1, 'weights.w1')
  const b1 = checkOptionalF32(wt.b1, 'weights.b1')
  const w2 = checkF32(wt.w2, 'weights.w2')
  const b2 = checkOptionalF32(wt.b2, 'weights.b2')
  if (w1.length === 0 || w1.length % c !== 0) {
    throw new RangeError(
      `weights.w1.length must be a positive multiple of C = ${c} (${cFrom}; w1 is [Cr, C]), got ${w1.length}`,
    )
  }
  const cr = w1.length / c
  checkLength(w2, 'weights.w2', c * cr, `C·Cr = ${c}·${cr}; w2 is [C, Cr] with Cr = weights.w1.length / C`)
  if (b1) checkLength(b1, 'weights.b1', cr, `Cr = weights.w1.length / C`)
  if (b2) checkLength(b2, 'weights.b2', c, `C = ${cFrom}`)
  return { w1, b1, w2, b2, cr }
}

function checkOpts<K extends string>(
  opts: unknown,
  fn: string,
  known: readonly K[],
): Partial<Record<K, unknown>> | undefined {
  if (opts === undefined) return undefined
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts) || ArrayBuffer.isView(opts)) {
    throw new TypeError(`opts must be an object or undefined, got ${describe(opts)}`)
  }
  // A misspelt option (`{ layuot: 'nhwc' }`) would otherwise silently compute the
  // wrong thing.
  for (const key of Object.keys(opts)) {
    if (!(known as readonly string[]).includes(key)) {
      throw new TypeError(`opts.${key} is not an option of ${fn} (known: ${known.join(', ')})`)
    }
  }
  const o = opts as Record<string, unknown>
  const read: Partial<Record<K, unknown>> = {}
  for (const key of known) read[key] = o[key]
  return read
}

function checkLayout(layout: unknown): Layout {
  if (layout === undefined) return 'nchw'
  if (layout === 'nchw' || layout === 'nhwc') return layout
  const msg = `opts.layout must be 'nchw' or 'nhwc', got ${describe(layout)}`
  throw typeof layout === 'string' ? new RangeError(msg) : new TypeError(msg)
}

function checkF32(v: unknown, name: string): Float32Array {
  // util.types works across realms (vm contexts, worker-transferred arrays).
  if (!utilTypes.isFloat32Array(v)) throw new TypeError(`${name} must be a Float32Array, got ${describe(v)}`)
  return v
}

function checkOptionalF32(v: unknown, name: string): Float32Array | undefined {
  if (v === undefined) return undefined
  if (!utilTypes.isFloat32Array(v)) {
    throw new TypeError(`${name} must be a Float32Array or undefined, got ${describe(v)}`)
  }
  return v
}

function checkPositiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number') throw new TypeError(`${name} must be a number, got ${describe(v)}`)
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer, got ${v}`)
  return v
}

function checkLength(a: Float32Array, name: string, expected: number, why: string): void {
  if (a.length !== expected) throw new RangeError(`${name}.length must be ${expected} (${why}), got ${a.length}`)
}

function overlap(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return (
    a.buffer === b.buffer &&
    a.byteOffset < b.byteOffset + b.byteLength &&
    b.byteOffset < a.byteOffset + a.byteLength
  )
}

function checkDisjoint(out: Float32Array, outName: string, input: ArrayBufferView, inName: string): void {
  if (overlap(out, input)) throw new RangeError(`${outName} must not share memory with ${inName}`)
}

function checkSameOrDisjoint(out: Float32Array, outName: string, input: Float32Array, inName: string): void {
  if (!overlap(out, input)) return
  if (out.byteOffset === input.byteOffset && out.length === input.length) return
  throw new RangeError(
    `${outName} partially overlaps ${inName}: it must be exactly ${inName} (in place: same buffer, ` +
      `offset and length) or share no memory with it; got byte range ` +
      `[${out.byteOffset}, ${out.byteOffset + out.byteLength}) vs [${input.byteOffset}, ${input.byteOffset + input.byteLength})`,
  )
}

function checkDisjointFromWeights(out: Float32Array, w: WeightArgs): void {
  checkDisjoint(out, 'opts.out', w.w1, 'weights.w1')
  if (w.b1) checkDisjoint(out, 'opts.out', w.b1, 'weights.b1')
  checkDisjoint(out, 'opts.out', w.w2, 'weights.w2')
  if (w.b2) checkDisjoint(out, 'opts.out', w.b2, 'weights.b2')
}

function fmtShape(shape: readonly unknown[]): string {
  return `[${shape.map((d) => (typeof d === 'number' ? String(d) : describe(d))).join(',')}]`
}

/** A short description of a value for error messages: its type, and the value if small. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (v === undefined) return 'undefined'
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`
  if (typeof v === 'number' || typeof v === 'boolean') return `${typeof v} ${v}`
  if (typeof v === 'bigint') return `bigint ${v}n`
  if (typeof v === 'symbol' || typeof v === 'function') return typeof v
  if (ArrayBuffer.isView(v)) {
    const name = Object.prototype.toString.call(v).slice(8, -1)
    return 'length' in v ? `${name} (length ${(v as unknown as { length: number }).length})` : name
  }
  if (Array.isArray(v)) return `Array (length ${v.length})`
  const proto = Object.getPrototypeOf(v)
  const ctor = proto && typeof proto.constructor === 'function' ? proto.constructor.name : ''
  return ctor && ctor !== 'Object' ? `${ctor} object` : 'object'
}
