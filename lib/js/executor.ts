/**
 * The pure-JS executor of a {@link Program}: the portable fallback of the native backend
 * and the baseline it is benchmarked against.
 *
 * Structure. `compile` validates the program once (slots, parameters, weight lengths)
 * and repacks every convolution's weights into the panel order of the matmul kernel
 * below; all weights are copied into `SharedArrayBuffer`s so that the worker thread of
 * `forward` reads the same memory as `forwardSync` (one copy of the weights, never
 * re-packed, immune to later mutation of the caller's arrays). The first call for a
 * given input shape infers and checks every op's shape and allocates one buffer per
 * slot (sized for the largest value the slot ever holds); later calls with that shape
 * reuse them. Only the returned logits are allocated per call.
 *
 * Convolution is a matmul per (image, group): `Y[M×N] = W[M×K] · col(X)[K×N]` with
 * M = cout/groups, K = (cin/groups)·kh·kw, N = oh·ow. `col(X)` is never materialised:
 * im2col fills one {@link NR}-column panel at a time (K×NR float64, a few KiB to a few
 * tens of KiB, so it stays in L1/L2), which is then swept by every {@link MR}-row block
 * of the packed weights. The 2×8 register tile (16 float64 accumulators) measured
 * fastest in V8 among 1..8 × 1..16 tiles (≈2.5 GFLOP/s on a Xeon at 2.5 GHz, against
 * ≈0.6 for a plain axpy loop); weights packed as float64 avoid a float32→float64
 * conversion per load and are ~30% faster than float32 at the price of twice the
 * memory. Bias, residual and ReLU are fused into the store of each tile. Depthwise
 * convolutions (one input and one output channel per group) take a direct loop
 * instead, since a 1-row matmul would waste half of each 2-row tile.
 *
 * Numerics. Products and sums run in float64 and each activation is rounded once to
 * float32 when stored, so a conv/linear/gap output is its exact value (for the float32
 * inputs) up to 0.5 ulp plus a float64 summation error (≈K·2⁻⁵³ relative to Σ|terms|).
 *
 * @packageDocumentation
 */

import { Worker, type MessagePort } from 'node:worker_threads'
import type {
  AddOp,
  CompiledModel,
  ConvOp,
  GlobalAvgPoolOp,
  LinearOp,
  MaxPoolOp,
  ModelBackend,
  Op,
  Program,
  SEOp,
  Slot,
} from '../model/program'
import type { Shape4 } from '../types'
import { seBlock } from './se'

/** Rows of the matmul register tile (output channels). */
const MR = 2
/** Columns of the matmul register tile (output pixels) = width of an im2col panel. */
const NR = 8
/** Plans (slot buffers) kept per compiled model, least recently used evicted first. */
const MAX_CACHED_SHAPES = 4

// --- compiled (packed) program: plain data, so it can be handed to a worker ------------

/**
 * A convolution with its weights repacked: for group g and row block b (MR rows, the
 * last one zero-padded), `packed[g·Mp·K + b·MR·K + k·MR + i]` = weight[g·M + b·MR + i][k],
 * k = (ci·kh + ky)·kw + kx in PyTorch order, Mp = ⌈M/MR⌉·MR. Depthwise convs keep the
 * PyTorch order (one kh·kw filter per channel).
 */
interface PackedConv extends Omit<ConvOp, 'weight' | 'bias'> {
  packed: Float64Array
  bias: Float64Array
  depthwise: boolean
}

type PackedOp = PackedConv | MaxPoolOp | SEOp | AddOp | GlobalAvgPoolOp | LinearOp

interface PackedProgram {
  ops: PackedOp[]
  numSlots: number
  inChannels: number
  numClasses: number
  output: Slot
  /** Largest K over the matmul convs: the panel holds K·NR values. */
  maxK: number
}

function shared32(a: Float32Array): Float32Array {
  const s = new Float32Array(new SharedArrayBuffer(a.byteLength))
  s.set(a)
  return s
}

function shared64(len: number): Float64Array {
  return new Float64Array(new SharedArrayBuffer(len * 8))
}

function fail(i: number, op: { op: string }, msg: string): never {
  throw new RangeError(`program op ${i} (${op.op}): ${msg}`)
}

function checkPositiveInt(i: number, op: Op, name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) fail(i, op, `${name} must be an integer ≥ ${min}, got ${v}`)
}

function checkLength(i: number, op: Op, name: string, a: unknown, expected: number, formula: string): void {
  if (!(a instanceof Float32Array)) fail(i, op, `${name} must be a Float32Array`)
  if (a.length !== expected) fail(i, op, `${name} has ${a.length} values, expected ${expected} (${formula})`)
}

/** Validates what does not depend on the input shape, then repacks and shares the weights. */
function packProgram(program: Program): PackedProgram {
  const { numSlots } = program
  if (!Number.isInteger(numSlots) || numSlots < 1) throw new RangeError(`program.numSlots must be an integer ≥ 1, got ${numSlots}`)
  const isSlot = (s: unknown): boolean => Number.isInteger(s) && (s as number) >= 0 && (s as number) < numSlots
  if (!isSlot(program.output)) throw new RangeError(`program.output ${program.output} is not a slot in 0..${numSlots - 1}`)
  if (!Number.isInteger(program.inChannels) || program.inChannels < 1) throw new RangeError('program.inChannels must be an integer ≥ 1')
  if (!Number.isInteger(program.numClasses) || program.numClasses < 1) throw new RangeError('program.numClasses must be an integer ≥ 1')
  let maxK = 0
  const ops = program.ops.map((op, i): PackedOp => {
    const inputs = op.op === 'add' ? [op.a, op.b] : [op.x]
    if ((op.op === 'conv' || op.op === 'se') && op.residual !== undefined) inputs.push(op.residual)
    for (const s of [...inputs, op.y]) if (!isSlot(s)) fail(i, op, `slot ${s} is not in 0..${numSlots - 1}`)
    if (inputs.includes(op.y)) fail(i, op, `output slot ${op.y} is also an input (ops never run in place)`)
    switch (op.op) {
      case 'conv': {
        for (const k of ['cin', 'cout', 'kh', 'kw', 'stride', 'groups'] as const) checkPositiveInt(i, op, k, op[k])
        checkPositiveInt(i, op, 'pad', op.pad, 0)
        const { cin, cout, kh, kw, groups } = op
        if (cin % groups !== 0 || cout % groups !== 0) fail(i, op, `cin ${cin} and cout ${cout} must be multiples of groups ${groups}`)
        const cpg = cin / groups
        const M = cout / groups
        const K = cpg * kh * kw
        checkLength(i, op, 'weight', op.weight, cout * K, 'cout·cin/groups·kh·kw')
        checkLength(i, op, 'bias', op.bias, cout, 'cout')
        const depthwise = cpg === 1 && M === 1
        const { weight, bias: b32, ...rest } = op
        const bias = shared64(cout)
        bias.set(b32)
        let packed: Float64Array
        if (depthwise) {
          packed = shared64(weight.length)
          packed.set(weight)
        } else {
          maxK = Math.max(maxK, K)
          const Mp = Math.ceil(M / MR) * MR
          packed = shared64(groups * Mp * K)
          for (let g = 0; g < groups; g++) {
            for (let m = 0; m < M; m++) {
              const blk = g * Mp * K + (m - (m % MR)) * K + (m % MR)
              const src = (g * M + m) * K
              for (let k = 0; k < K; k++) packed[blk + k * MR] = weight[src + k]
            }
          }
        }
        return { ...rest, packed, bias, depthwise }
      }
      case 'maxpool': {
        checkPositiveInt(i, op, 'k', op.k)
        checkPositiveInt(i, op, 'stride', op.stride)
        checkPositiveInt(i, op, 'pad', op.pad, 0)
        if (2 * op.pad > op.k) fail(i, op, `pad ${op.pad} must be at most k/2 = ${op.k / 2} (as in PyTorch)`)
        return { ...op }
      }
      case 'se': {
        checkPositiveInt(i, op, 'c', op.c)
        checkPositiveInt(i, op, 'cr', op.cr)
        checkLength(i, op, 'w1', op.w1, op.cr * op.c, 'cr·c')
        checkLength(i, op, 'w2', op.w2, op.c * op.cr, 'c·cr')
        if (op.b1 !== undefined) checkLength(i, op, 'b1', op.b1, op.cr, 'cr')
        if (op.b2 !== undefined) checkLength(i, op, 'b2', op.b2, op.c, 'c')
        return {
          ...op,
          w1: shared32(op.w1),
          w2: shared32(op.w2),
          b1: op.b1 && shared32(op.b1),
          b2: op.b2 && shared32(op.b2),
        }
      }
      case 'linear': {
        checkPositiveInt(i, op, 'cin', op.cin)
        checkPositiveInt(i, op, 'cout', op.cout)
        checkLength(i, op, 'weight', op.weight, op.cout * op.cin, 'cout·cin')
        checkLength(i, op, 'bias', op.bias, op.cout, 'cout')
        return { ...op, weight: shared32(op.weight), bias: shared32(op.bias) }
      }
      case 'add':
      case 'gap':
        return { ...op }
      default:
        throw new RangeError(`program op ${i}: unknown op ${JSON.stringify((op as { op: unknown }).op)}`)
    }
  })
  return {
    ops,
    numSlots,
    inChannels: program.inChannels,
    numClasses: program.numClasses,
    output: program.output,
    maxK,
  }
}

// --- kernels -------------------------------------------------------------------------

/** Scratch shared by all convs of one executor (it runs one pass at a time). */
interface Scratch {
  /** One im2col panel: K×NR, column j of row k at k·NR + j. */
  panel: Float64Array
  /** Input offsets of the NR pixels of a panel for one (ky, kx); −1 = padding. */
  offs: Int32Array
  /** Top-left input coordinates of the NR pixels of a panel. */
  iy0: Int32Array
  ix0: Int32Array
  /** The 2×8 tile's accumulators, row-major. */
  acc: Float64Array
}

/**
 * `y = act(conv(x) + bias [+ res])` through the packed matmul.
 * Lengths were checked when the plan was built.
 */
function conv2dGemm(
  op: PackedConv,
  x: Float32Array,
  y: Float32Array,
  res: Float32Array | undefined,
  n: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
  s: Scratch,
): void {
  const { cin, cout, kh, kw, stride, pad, groups, packed, bias, relu } = op
  const cpg = cin / groups
  const M = cout / groups
  const Mp = Math.ceil(M / MR) * MR
  const K = cpg * kh * kw
  const kk = kh * kw
  const N = oh * ow
  const hw = h * w
  const pointwise = kh === 1 && kw === 1 && stride === 1 && pad === 0
  const { panel, offs, iy0, ix0, acc } = s
  for (let b = 0; b < n; b++) {
    for (let g = 0; g < groups; g++) {
      const xg = (b * cin + g * cpg) * hw
      const yg = (b * cout + g * M) * N
      const wg = g * Mp * K
      for (let p0 = 0; p0 < N; p0 += NR) {
        const nv = Math.min(NR, N - p0)
        // im2col of output pixels p0 .. p0+nv-1 into the panel (zero columns beyond nv).
        if (pointwise) {
          for (let k = 0, src = xg + p0, dst = 0; k < K; k++, src += hw, dst += NR) {
            let j = 0
            for (; j < nv; j++) panel[dst + j] = x[src + j]
            for (; j < NR; j++) panel[dst + j] = 0
          }
        } else {
          for (let j = 0; j < NR; j++) {
            const p = p0 + j
            const oy = (p / ow) | 0
            iy0[j] = j < nv ? oy * stride - pad : -(1 << 30)
            ix0[j] = (p - oy * ow) * stride - pad
          }
          for (let ky = 0; ky < kh; ky++) {
            for (let kx = 0; kx < kw; kx++) {
              for (let j = 0; j < NR; j++) {
                const iy = iy0[j] + ky
                const ix = ix0[j] + kx
                offs[j] = iy >= 0 && iy < h && ix >= 0 && ix < w ? iy * w + ix : -1
              }
              for (let ci = 0, dst = (ky * kw + kx) * NR, src = xg; ci < cpg; ci++, dst += kk * NR, src += hw) {
                for (let j = 0; j < NR; j++) {
                  const o = offs[j]
                  panel[dst + j] = o < 0 ? 0 : x[src + o]
                }
              }
            }
          }
        }
        for (let m0 = 0; m0 < M; m0 += MR) {
          tile2x8(packed, wg + m0 * K, panel, K, acc)
          const co = g * M + m0
          const o0 = yg + m0 * N + p0
          storeRow(y, res, o0, nv, bias[co], relu, acc, 0)
          if (m0 + 1 < M) storeRow(y, res, o0 + N, nv, bias[co + 1], relu, acc, NR)
        }
      }
    }
  }
}

/**
 * acc[i·NR + j] = Σ_k a[pa + k·MR + i] · panel[k·NR + j] for the 2×8 tile. A small
 * function of its own, so that only the 16 accumulators and the loop indices are live in
 * the hot loop (the strides are literals: MR = 2, NR = 8).
 */
function tile2x8(a: Float64Array, pa: number, panel: Float64Array, K: number, acc: Float64Array): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c04 = 0, c05 = 0, c06 = 0, c07 = 0
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0, c14 = 0, c15 = 0, c16 = 0, c17 = 0
  for (let k = 0, pb = 0; k < K; k++, pa += 2, pb += 8) {
    const b0 = panel[pb], b1 = panel[pb + 1], b2 = panel[pb + 2], b3 = panel[pb + 3]
    const b4 = panel[pb + 4], b5 = panel[pb + 5], b6 = panel[pb + 6], b7 = panel[pb + 7]
    let w = a[pa]
    c00 += w * b0; c01 += w * b1; c02 += w * b2; c03 += w * b3
    c04 += w * b4; c05 += w * b5; c06 += w * b6; c07 += w * b7
    w = a[pa + 1]
    c10 += w * b0; c11 += w * b1; c12 += w * b2; c13 += w * b3
    c14 += w * b4; c15 += w * b5; c16 += w * b6; c17 += w * b7
  }
  acc[0] = c00; acc[1] = c01; acc[2] = c02; acc[3] = c03; acc[4] = c04; acc[5] = c05; acc[6] = c06; acc[7] = c07
  acc[8] = c10; acc[9] = c11; acc[10] = c12; acc[11] = c13; acc[12] = c14; acc[13] = c15; acc[14] = c16; acc[15] = c17
}

/** Stores y[o + j] = act(acc[a + j] + bias [+ res[o + j]]) for j < nv, rounding once to float32. */
function storeRow(
  y: Float32Array,
  res: Float32Array | undefined,
  o: number,
  nv: number,
  bias: number,
  relu: boolean,
  acc: Float64Array,
  a: number,
): void {
  if (res === undefined) {
    if (relu) {
      for (let j = 0; j < nv; j++) {
        const v = acc[a + j] + bias
        y[o + j] = v > 0 ? v : 0
      }
    } else {
      for (let j = 0; j < nv; j++) y[o + j] = acc[a + j] + bias
    }
  } else if (relu) {
    for (let j = 0; j < nv; j++) {
      const v = acc[a + j] + bias + res[o + j]
      y[o + j] = v > 0 ? v : 0
    }
  } else {
    for (let j = 0; j < nv; j++) y[o + j] = acc[a + j] + bias + res[o + j]
  }
}

/** Depthwise conv (one input and one output channel per group), direct loop. */
function conv2dDepthwise(
  op: PackedConv,
  x: Float32Array,
  y: Float32Array,
  res: Float32Array | undefined,
  n: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
): void {
  const { cout, kh, kw, stride, pad, packed, bias, relu } = op
  for (let b = 0; b < n; b++) {
    for (let c = 0; c < cout; c++) {
      const xc = (b * cout + c) * h * w
      const yc = (b * cout + c) * oh * ow
      const wc = c * kh * kw
      const bc = bias[c]
      for (let oy = 0; oy < oh; oy++) {
        const iy0 = oy * stride - pad
        const ky0 = Math.max(0, -iy0)
        const ky1 = Math.min(kh, h - iy0)
        for (let ox = 0; ox < ow; ox++) {
          const ix0 = ox * stride - pad
          const kx0 = Math.max(0, -ix0)
          const kx1 = Math.min(kw, w - ix0)
          let acc = bc
          for (let ky = ky0; ky < ky1; ky++) {
            const xr = xc + (iy0 + ky) * w + ix0
            const wr = wc + ky * kw
            for (let kx = kx0; kx < kx1; kx++) acc += packed[wr + kx] * x[xr + kx]
          }
          const o = yc + oy * ow + ox
          if (res !== undefined) acc += res[o]
          y[o] = relu && acc < 0 ? 0 : acc
        }
      }
    }
  }
}

/** Max pooling; windows are clipped to the input (padding counts as −∞). */
function maxPool(op: MaxPoolOp, x: Float32Array, y: Float32Array, nc: number, h: number, w: number, oh: number, ow: number): void {
  const { k, stride, pad } = op
  for (let p = 0; p < nc; p++) {
    const xp = p * h * w
    const yp = p * oh * ow
    for (let oy = 0; oy < oh; oy++) {
      const y0 = Math.max(0, oy * stride - pad)
      const y1 = Math.min(h, oy * stride - pad + k)
      for (let ox = 0; ox < ow; ox++) {
        const x0 = Math.max(0, ox * stride - pad)
        const x1 = Math.min(w, ox * stride - pad + k)
        let m = -Infinity
        for (let iy = y0; iy < y1; iy++) {
          const r = xp + iy * w
          for (let ix = x0; ix < x1; ix++) {
            const v = x[r + ix]
            // `!(v <= m)` also lets NaN through, as PyTorch propagates it.
            if (!(v <= m)) m = v
          }
        }
        y[yp + oy * ow + ox] = m
      }
    }
  }
}

function globalAvgPool(x: Float32Array, y: Float32Array, nc: number, hw: number): void {
  for (let p = 0; p < nc; p++) {
    let s = 0
    for (let i = p * hw, e = i + hw; i < e; i++) s += x[i]
    y[p] = s / hw
  }
}

function linear(op: LinearOp, x: Float32Array, y: Float32Array, n: number): void {
  const { cin, cout, weight, bias } = op
  for (let b = 0; b < n; b++) {
    const xb = b * cin
    for (let o = 0; o < cout; o++) {
      const wo = o * cin
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0
      let i = 0
      for (; i + 4 <= cin; i += 4) {
        s0 += weight[wo + i] * x[xb + i]
        s1 += weight[wo + i + 1] * x[xb + i + 1]
        s2 += weight[wo + i + 2] * x[xb + i + 2]
        s3 += weight[wo + i + 3] * x[xb + i + 3]
      }
      for (; i < cin; i++) s0 += weight[wo + i] * x[xb + i]
      y[b * cout + o] = bias[o] + (s0 + s1 + (s2 + s3))
    }
  }
}

function add(a: Float32Array, b: Float32Array, y: Float32Array, relu: boolean): void {
  const len = y.length
  if (relu) {
    for (let i = 0; i < len; i++) {
      const v = a[i] + b[i]
      y[i] = v > 0 ? v : 0
    }
  } else {
    for (let i = 0; i < len; i++) y[i] = a[i] + b[i]
  }
}

// --- plans: shapes and buffers for one input shape -----------------------------------

/** One op bound to its buffers; `input` is the caller's x (slot 0 before it is overwritten). */
type Step = (input: Float32Array) => void

interface Plan {
  steps: Step[]
  /** The logits: a view of the output slot's buffer, or null when it is the input itself. */
  result: Float32Array | null
  resultLength: number
}

function poolExtent(size: number, k: number, stride: number, pad: number, ceil: boolean): number {
  // PyTorch's pooling_output_shape: floor division (toward −∞) of the padded span, plus
  // stride − 1 in ceil mode; a ceil-mode window may then overhang the input on the
  // right/bottom (e.g. 3×3/2 over 2×2 gives 1×1), but must start inside the input or the
  // left/top padding, else it is dropped.
  let out = Math.floor((size + 2 * pad - k + (ceil ? stride - 1 : 0)) / stride) + 1
  if (ceil && (out - 1) * stride >= size + pad) out -= 1
  return Math.max(out, 0)
}

function shapeStr(s: Shape4): string {
  return `[${s.join(', ')}]`
}

/** Infers and checks every op's shape for input `inShape`, allocates the slot buffers, binds the steps. */
function buildPlan(prog: PackedProgram, inShape: Shape4, scratch: Scratch): Plan {
  const shapes: (Shape4 | undefined)[] = new Array(prog.numSlots).fill(undefined)
  shapes[0] = inShape
  const outShapes: Shape4[] = []
  const need = (i: number, op: PackedOp, slot: Slot): Shape4 => {
    const s = shapes[slot]
    if (s === undefined) fail(i, op, `reads slot ${slot}, which no earlier op wrote`)
    return s
  }
  const same = (i: number, op: PackedOp, what: string, a: Shape4, b: Shape4): void => {
    if (a.some((v, d) => v !== b[d])) fail(i, op, `${what} has shape ${shapeStr(b)}, expected ${shapeStr(a)}`)
  }
  // Pass 1: shapes.
  prog.ops.forEach((op, i) => {
    let out: Shape4
    switch (op.op) {
      case 'conv': {
        const [n, c, h, w] = need(i, op, op.x)
        if (c !== op.cin) fail(i, op, `input has ${c} channels, expected cin = ${op.cin}`)
        const oh = Math.floor((h + 2 * op.pad - op.kh) / op.stride) + 1
        const ow = Math.floor((w + 2 * op.pad - op.kw) / op.stride) + 1
        if (h + 2 * op.pad < op.kh || w + 2 * op.pad < op.kw) {
          fail(i, op, `input ${h}×${w} with pad ${op.pad} is smaller than the ${op.kh}×${op.kw} kernel`)
        }
        out = [n, op.cout, oh, ow]
        if (op.residual !== undefined) same(i, op, `residual slot ${op.residual}`, out, need(i, op, op.residual))
        break
      }
      case 'maxpool': {
        const [n, c, h, w] = need(i, op, op.x)
        const oh = poolExtent(h, op.k, op.stride, op.pad, op.ceil)
        const ow = poolExtent(w, op.k, op.stride, op.pad, op.ceil)
        if (oh < 1 || ow < 1) fail(i, op, `input ${h}×${w} with pad ${op.pad} is smaller than the ${op.k}×${op.k} window`)
        out = [n, c, oh, ow]
        break
      }
      case 'se': {
        const s = need(i, op, op.x)
        if (s[1] !== op.c) fail(i, op, `input has ${s[1]} channels, expected c = ${op.c}`)
        if (op.residual !== undefined) same(i, op, `residual slot ${op.residual}`, s, need(i, op, op.residual))
        out = [...s]
        break
      }
      case 'add': {
        const a = need(i, op, op.a)
        same(i, op, `slot ${op.b}`, a, need(i, op, op.b))
        out = [...a]
        break
      }
      case 'gap': {
        const [n, c] = need(i, op, op.x)
        out = [n, c, 1, 1]
        break
      }
      case 'linear': {
        const [n, c, h, w] = need(i, op, op.x)
        if (c !== op.cin || h !== 1 || w !== 1) fail(i, op, `input has shape [${n}, ${c}, ${h}, ${w}], expected [${n}, ${op.cin}, 1, 1]`)
        out = [n, op.cout, 1, 1]
        break
      }
    }
    outShapes.push(out)
    shapes[op.y] = out
  })
  const final = shapes[prog.output]
  const n = inShape[0]
  if (final === undefined) throw new RangeError(`program.output slot ${prog.output} is never written`)
  // [n, c, h, w] with c·h·w = numClasses is read as [n, numClasses] (row-major flatten).
  if (final[0] !== n || final[1] * final[2] * final[3] !== prog.numClasses) {
    throw new RangeError(`program output has shape ${shapeStr(final)}, expected [${n}, ${prog.numClasses}, 1, 1]`)
  }

  // Pass 2: one buffer per written slot, as large as the largest value it holds.
  const sizes = new Array<number>(prog.numSlots).fill(0)
  prog.ops.forEach((op, i) => {
    const len = outShapes[i].reduce((a, b) => a * b, 1)
    sizes[op.y] = Math.max(sizes[op.y], len)
  })
  const buffers = sizes.map((len) => (len > 0 ? new Float32Array(len) : null))
  const view = (slot: Slot, s: Shape4): Float32Array => (buffers[slot] as Float32Array).subarray(0, s[0] * s[1] * s[2] * s[3])

  // Pass 3: bind. `current[slot]` is the array holding the slot's live value, null = input.
  const current: (Float32Array | null)[] = new Array(prog.numSlots).fill(undefined)
  current[0] = null
  shapes.fill(undefined)
  shapes[0] = inShape
  const steps = prog.ops.map((op, i): Step => {
    const ys = outShapes[i]
    const yv = view(op.y, ys)
    let step: Step
    switch (op.op) {
      case 'conv': {
        const [n, , h, w] = shapes[op.x] as Shape4
        const [, , oh, ow] = ys
        const xv = current[op.x]
        const rv = op.residual === undefined ? undefined : current[op.residual]
        const hasRes = op.residual !== undefined
        step = op.depthwise
          ? (input) => conv2dDepthwise(op, xv ?? input, yv, hasRes ? (rv ?? input) : undefined, n, h, w, oh, ow)
          : (input) => conv2dGemm(op, xv ?? input, yv, hasRes ? (rv ?? input) : undefined, n, h, w, oh, ow, scratch)
        break
      }
      case 'maxpool': {
        const [n, c, h, w] = shapes[op.x] as Shape4
        const xv = current[op.x]
        step = (input) => maxPool(op, xv ?? input, yv, n * c, h, w, ys[2], ys[3])
        break
      }
      case 'se': {
        const xs = shapes[op.x] as Shape4
        const xv = current[op.x]
        const rv = op.residual === undefined ? undefined : current[op.residual]
        const hasRes = op.residual !== undefined
        const weights = { w1: op.w1, b1: op.b1, w2: op.w2, b2: op.b2 }
        step = (input) => {
          seBlock(xv ?? input, xs, weights, { out: yv, residual: hasRes ? (rv ?? input) : undefined, relu: op.relu })
        }
        break
      }
      case 'add': {
        const av = current[op.a]
        const bv = current[op.b]
        step = (input) => add(av ?? input, bv ?? input, yv, op.relu)
        break
      }
      case 'gap': {
        const [n, c, h, w] = shapes[op.x] as Shape4
        const xv = current[op.x]
        step = (input) => globalAvgPool(xv ?? input, yv, n * c, h * w)
        break
      }
      case 'linear': {
        const xv = current[op.x]
        step = (input) => linear(op, xv ?? input, yv, ys[0])
        break
      }
    }
    current[op.y] = yv
    shapes[op.y] = ys
    return step
  })
  return { steps, result: current[prog.output], resultLength: n * prog.numClasses }
}

// --- executor: runs a packed program on the current thread ---------------------------

class Executor {
  private readonly plans = new Map<string, Plan>()
  private readonly scratch: Scratch

  constructor(private readonly prog: PackedProgram) {
    this.scratch = {
      panel: new Float64Array(prog.maxK * NR),
      offs: new Int32Array(NR),
      iy0: new Int32Array(NR),
      ix0: new Int32Array(NR),
      acc: new Float64Array(MR * NR),
    }
  }

  run(x: Float32Array, shape: Shape4): Float32Array {
    if (!(x instanceof Float32Array)) throw new TypeError('x must be a Float32Array')
    if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d >= 1)) {
      throw new RangeError(`shape must be [n, c, h, w] of positive integers, got ${JSON.stringify(shape)}`)
    }
    const [n, c, h, w] = shape
    if (c !== this.prog.inChannels) throw new RangeError(`input has ${c} channels, the model expects ${this.prog.inChannels}`)
    if (x.length !== n * c * h * w) throw new RangeError(`x has ${x.length} values, shape ${shapeStr(shape)} needs ${n * c * h * w}`)
    const key = shape.join(',')
    let plan = this.plans.get(key)
    if (plan === undefined) {
      plan = buildPlan(this.prog, [n, c, h, w], this.scratch)
      if (this.plans.size >= MAX_CACHED_SHAPES) this.plans.delete(this.plans.keys().next().value as string)
    } else {
      this.plans.delete(key) // re-inserted below: most recently used last
    }
    this.plans.set(key, plan)
    for (const step of plan.steps) step(x)
    return (plan.result ?? x).slice(0, plan.resultLength)
  }

  dispose(): void {
    this.plans.clear()
  }
}

// --- forward off the JS thread ----------------------------------------------------------

interface Request {
  x: Float32Array
  shape: Shape4
  resolve: (y: Float32Array) => void
  reject: (err: Error) => void
}

type WorkerReply = { type: 'ready' } | { type: 'result'; id: number; y: Float32Array } | { type: 'error'; id: number; message: string; name: string }

/**
 * Runs in the worker: builds an executor over the shared packed program and answers
 * requests in order. Called by the worker's bootstrap code, not meant for other use.
 * @internal
 */
export function serveExecutorWorker(port: MessagePort, prog: PackedProgram): void {
  const ex = new Executor(prog)
  port.on('message', (m: { id: number; x: Float32Array; shape: Shape4 }) => {
    let reply: WorkerReply
    try {
      const y = ex.run(m.x, m.shape)
      port.postMessage({ type: 'result', id: m.id, y } satisfies WorkerReply, [y.buffer as ArrayBuffer])
      return
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e))
      reply = { type: 'error', id: m.id, message: err.message, name: err.name }
    }
    port.postMessage(reply)
  })
  port.postMessage({ type: 'ready' } satisfies WorkerReply)
}

/**
 * Bootstrap of the worker, evaluated as CommonJS. It requires this very module by path:
 * `dist/js/executor.js` when running compiled, `lib/js/executor.ts` when running the
 * sources. For the latter the worker needs a TypeScript require hook, and inheriting
 * `--import=tsx` is not enough: on Node 20 tsx installs its hooks on the main thread
 * only, so the bootstrap registers tsx's CommonJS hook itself (unless some `.ts` hook is
 * already there). Should the module still fail to load, the worker errors before
 * `ready` and the requests fall back to the main thread.
 */
function workerSource(modulePath: string): string {
  return [
    `const { parentPort, workerData } = require('node:worker_threads');`,
    `const file = ${JSON.stringify(modulePath)};`,
    `if (file.endsWith('.ts') && !require.extensions['.ts']) {`,
    `  const api = require.resolve('tsx/cjs/api', { paths: [require('node:path').dirname(file)] });`,
    `  require(api).register();`,
    `}`,
    `require(file).serveExecutorWorker(parentPort, workerData);`,
  ].join('\n')
}

/** Where `forward` runs: not decided yet, in the model's worker, or on the main thread. */
export type ForwardThread = 'not-started' | 'worker' | 'main'

/** The js backend's {@link CompiledModel}, with a diagnostic of where `forward` runs. */
export interface JsCompiledModel extends CompiledModel {
  /**
   * `'worker'` once the model's worker has started, `'main'` if it could not (then
   * `forward` computes on the main thread after a `setImmediate`), `'not-started'`
   * before the first `forward`.
   */
  readonly forwardThread: ForwardThread
}

class JsModel implements JsCompiledModel {
  private local: Executor | null = null
  private worker: Worker | null = null
  private workerReady = false
  private workerFailed = false
  private nextId = 0
  private readonly pending = new Map<number, Request>()
  private disposed = false

  constructor(private prog: PackedProgram | null) {}

  get forwardThread(): ForwardThread {
    if (this.workerFailed) return 'main'
    return this.workerReady ? 'worker' : 'not-started'
  }

  forwardSync(x: Float32Array, shape: Shape4): Float32Array {
    return this.executor().run(x, shape)
  }

  forward(x: Float32Array, shape: Shape4): Promise<Float32Array> {
    return new Promise<Float32Array>((resolve, reject) => {
      if (this.disposed) throw new Error('model was disposed')
      const req: Request = { x, shape, resolve, reject }
      const w = this.workerFailed ? null : this.startWorker()
      if (w === null) {
        this.runOnMain(req)
        return
      }
      const id = this.nextId++
      if (this.pending.size === 0) w.ref() // keep the process alive until the answer arrives
      this.pending.set(id, req)
      // Structured clone copies x, so the caller may reuse its buffer right away.
      w.postMessage({ id, x, shape })
    })
  }

  dispose(): void {
    this.disposed = true
    const w = this.worker
    this.worker = null
    if (w !== null) void w.terminate()
    this.rejectAll(new Error('model was disposed'))
    this.local?.dispose()
    this.local = null
    this.prog = null
  }

  private executor(): Executor {
    if (this.local === null) {
      if (this.prog === null) throw new Error('model was disposed')
      this.local = new Executor(this.prog)
    }
    return this.local
  }

  private runOnMain(req: Request): void {
    setImmediate(() => {
      try {
        req.resolve(this.forwardSync(req.x, req.shape))
      } catch (e) {
        req.reject(e instanceof Error ? e : new Error(String(e)))
      }
    })
  }

  private startWorker(): Worker | null {
    if (this.worker !== null) return this.worker
    let w: Worker
    try {
      if (typeof __filename !== 'string') throw new Error('no module path')
      w = new Worker(workerSource(__filename), { eval: true, workerData: this.prog })
    } catch {
      this.workerFailed = true
      return null
    }
    w.unref()
    this.worker = w
    w.on('message', (m: WorkerReply) => {
      if (m.type === 'ready') {
        this.workerReady = true
        return
      }
      const req = this.pending.get(m.id)
      if (req === undefined) return
      this.pending.delete(m.id)
      if (this.pending.size === 0 && this.worker === w) w.unref()
      if (m.type === 'result') {
        req.resolve(m.y)
      } else {
        const err = m.name === 'TypeError' ? new TypeError(m.message) : m.name === 'RangeError' ? new RangeError(m.message) : new Error(m.message)
        req.reject(err)
      }
    })
    const onDeath = (err: Error): void => {
      if (this.worker !== w) return // already replaced or disposed
      this.worker = null
      if (!this.workerReady) {
        // Could not even start (no worker support, module not loadable): compute here.
        this.workerFailed = true
        const reqs = [...this.pending.values()]
        this.pending.clear()
        for (const r of reqs) this.runOnMain(r)
      } else {
        // Died while working (e.g. out of memory): fail what it held; the next forward respawns.
        this.workerReady = false
        this.rejectAll(err)
      }
    }
    w.on('error', onDeath)
    w.on('exit', (code) => onDeath(new Error(`executor worker exited with code ${code}`)))
    return w
  }

  private rejectAll(err: Error): void {
    const reqs = [...this.pending.values()]
    this.pending.clear()
    for (const r of reqs) r.reject(err)
  }
}

/**
 * The pure-JS backend. `compile` checks the program and repacks its weights once;
 * `forwardSync` runs on the calling thread; `forward` runs in one worker thread per
 * compiled model (started on first use, requests served in order, unreferenced while
 * idle so it never keeps the process alive; `dispose` terminates it). Where a worker
 * cannot start, `forward` computes on the main thread after a `setImmediate`.
 *
 * @throws RangeError from `compile` when the program is malformed, and from
 * `forwardSync` / `forward` when the input's shape does not fit it.
 */
export const jsBackend: ModelBackend = {
  name: 'js',
  compile(program: Program): JsCompiledModel {
    return new JsModel(packProgram(program))
  },
}
