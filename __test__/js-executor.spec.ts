/**
 * Program executor tests: every op, on tiny hand-built programs with seeded random
 * weights, against naive float64 references written here (independent of the
 * executors: direct per-output-element formulas, PyTorch's own pooling-size formula).
 *
 * One table of cases, run against every backend in `backends` (the native one can be
 * added to that list; the tolerances below are the JS backend's, see `TOL`).
 *
 * The output of a single-op program is read through `numClasses = c·h·w`: executors
 * read an output slot of shape [n, c, h, w] as the row-major [n, c·h·w].
 */
import test from 'ava'

import { jsBackend } from '../lib/js/executor'
import type { CompiledModel, ModelBackend, Op, Program } from '../lib/model/program'

type Shape4 = [number, number, number, number]

const backends: ModelBackend[] = [jsBackend]

// --- seeded data ------------------------------------------------------------------------

function rng(seed: number): () => number {
  // mulberry32
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

let seed = 1
function rand(len: number, scale = 1): Float32Array {
  const r = rng(seed++)
  return Float32Array.from({ length: len }, () => (2 * r() - 1) * scale)
}

const size = (s: Shape4): number => s[0] * s[1] * s[2] * s[3]

// --- float64 references ---------------------------------------------------------------

/** A float64 activation with its shape; `mag[i]` bounds the magnitudes summed into v[i]. */
interface T {
  v: Float64Array
  s: Shape4
  mag: Float64Array
}

function refConv(x: T, op: Extract<Op, { op: 'conv' }>, res?: T): T {
  const [n, cin, h, w] = x.s
  const { cout, kh, kw, stride, pad, groups } = op
  const cpg = cin / groups
  const opg = cout / groups
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1
  const ow = Math.floor((w + 2 * pad - kw) / stride) + 1
  const s: Shape4 = [n, cout, oh, ow]
  const v = new Float64Array(size(s))
  const mag = new Float64Array(size(s))
  for (let b = 0; b < n; b++)
    for (let co = 0; co < cout; co++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          const g = Math.floor(co / opg)
          let acc = op.bias[co]
          let m = Math.abs(acc)
          for (let ci = 0; ci < cpg; ci++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                const iy = oy * stride - pad + ky
                const ix = ox * stride - pad + kx
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue
                const t = op.weight[((co * cpg + ci) * kh + ky) * kw + kx] * x.v[((b * cin + g * cpg + ci) * h + iy) * w + ix]
                acc += t
                m += Math.abs(t)
              }
          const o = ((b * cout + co) * oh + oy) * ow + ox
          if (res) {
            acc += res.v[o]
            m += Math.abs(res.v[o])
          }
          v[o] = op.relu ? Math.max(0, acc) : acc
          mag[o] = m
        }
  return { v, s, mag }
}

/** Output size as PyTorch's `pooling_output_shape` computes it (dilation 1). */
function torchPoolSize(inSize: number, k: number, pad: number, stride: number, ceil: boolean): number {
  let out = Math.floor((inSize + 2 * pad - (k - 1) - 1 + (ceil ? stride - 1 : 0)) / stride) + 1
  if (ceil && (out - 1) * stride >= inSize + pad) out--
  return out
}

function refMaxPool(x: T, op: Extract<Op, { op: 'maxpool' }>): T {
  const [n, c, h, w] = x.s
  const oh = torchPoolSize(h, op.k, op.pad, op.stride, op.ceil)
  const ow = torchPoolSize(w, op.k, op.pad, op.stride, op.ceil)
  const s: Shape4 = [n, c, oh, ow]
  const v = new Float64Array(size(s))
  for (let p = 0; p < n * c; p++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++) {
        let m = -Infinity
        for (let ky = 0; ky < op.k; ky++)
          for (let kx = 0; kx < op.k; kx++) {
            const iy = oy * op.stride - op.pad + ky
            const ix = ox * op.stride - op.pad + kx
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) m = Math.max(m, x.v[(p * h + iy) * w + ix])
          }
        v[(p * oh + oy) * ow + ox] = m
      }
  return { v, s, mag: v.map(Math.abs) }
}

function refGap(x: T): T {
  const [n, c, h, w] = x.s
  const v = new Float64Array(n * c)
  const mag = new Float64Array(n * c)
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < h * w; i++) {
      v[p] += x.v[p * h * w + i]
      mag[p] += Math.abs(x.v[p * h * w + i])
    }
    v[p] /= h * w
    mag[p] /= h * w
  }
  return { v, s: [n, c, 1, 1], mag }
}

function refLinear(x: T, op: Extract<Op, { op: 'linear' }>): T {
  const n = x.s[0]
  const v = new Float64Array(n * op.cout)
  const mag = new Float64Array(n * op.cout)
  for (let b = 0; b < n; b++)
    for (let o = 0; o < op.cout; o++) {
      let acc = op.bias[o]
      let m = Math.abs(acc)
      for (let i = 0; i < op.cin; i++) {
        const t = op.weight[o * op.cin + i] * x.v[b * op.cin + i]
        acc += t
        m += Math.abs(t)
      }
      v[b * op.cout + o] = acc
      mag[b * op.cout + o] = m
    }
  return { v, s: [n, op.cout, 1, 1], mag }
}

function refSE(x: T, op: Extract<Op, { op: 'se' }>, res?: T): T {
  const [n, c, h, w] = x.s
  const hw = h * w
  const v = new Float64Array(size(x.s))
  const mag = new Float64Array(size(x.s))
  for (let b = 0; b < n; b++) {
    const z = Array.from({ length: c }, (_, ch) => {
      let s = 0
      for (let i = 0; i < hw; i++) s += x.v[(b * c + ch) * hw + i]
      return s / hw
    })
    const hid = Array.from({ length: op.cr }, (_, r) => {
      let s = op.b1 ? op.b1[r] : 0
      for (let ch = 0; ch < c; ch++) s += op.w1[r * c + ch] * z[ch]
      return Math.max(0, s)
    })
    for (let ch = 0; ch < c; ch++) {
      let s = op.b2 ? op.b2[ch] : 0
      for (let r = 0; r < op.cr; r++) s += op.w2[ch * op.cr + r] * hid[r]
      const gate = 1 / (1 + Math.exp(-s))
      for (let i = 0; i < hw; i++) {
        const o = (b * c + ch) * hw + i
        let y = x.v[o] * gate
        mag[o] = Math.abs(x.v[o])
        if (res) {
          y += res.v[o]
          mag[o] += Math.abs(res.v[o])
        }
        v[o] = op.relu ? Math.max(0, y) : y
      }
    }
  }
  return { v, s: x.s, mag }
}

/** Interprets a program in float64, rounding every stored activation to float32 (as the contract stores them). */
function refRun(p: Program, x: Float32Array, shape: Shape4): T {
  const slots: (T | undefined)[] = new Array(p.numSlots)
  slots[0] = { v: Float64Array.from(x), s: shape, mag: Float64Array.from(x, Math.abs) }
  const get = (i: number): T => slots[i] as T
  let last: T = get(0)
  for (const op of p.ops) {
    let y: T
    switch (op.op) {
      case 'conv':
        y = refConv(get(op.x), op, op.residual === undefined ? undefined : get(op.residual))
        break
      case 'maxpool':
        y = refMaxPool(get(op.x), op)
        break
      case 'se':
        y = refSE(get(op.x), op, op.residual === undefined ? undefined : get(op.residual))
        break
      case 'add': {
        const a = get(op.a)
        const b = get(op.b)
        const v = a.v.map((t, i) => (op.relu ? Math.max(0, t + b.v[i]) : t + b.v[i]))
        y = { v, s: a.s, mag: a.v.map((t, i) => Math.abs(t) + Math.abs(b.v[i])) }
        break
      }
      case 'gap':
        y = refGap(get(op.x))
        break
      case 'linear':
        y = refLinear(get(op.x), op)
        break
    }
    last = { v: y.v.map(Math.fround), s: y.s, mag: y.mag }
    slots[op.y] = last
  }
  return get(p.output)
}

// --- tolerances -------------------------------------------------------------------------

/**
 * |got − want| ≤ rel·|want| + mag·absPerMag, where `mag` is Σ|terms| of the value.
 * The JS executor sums in float64 and rounds once to float32: ≤ 2⁻²⁴·|want| (we allow
 * 2⁻²³) plus a float64 summation error ≤ K·2⁻⁵³·Σ|terms| (< 2⁻⁴⁰·Σ|terms| for K < 8192).
 * Through seBlock (the SE kernel) the gate is stored as float32 and x·g + residual is
 * rounded up to twice: three roundings of values ≤ Σ|terms| = |x| + |residual|, so
 * ≤ 3·2⁻²⁴·mag; we allow 2⁻²¹·mag.
 * A multi-op program compounds per-op errors through later ops (a 1-ulp change in an
 * activation moves the next conv by ≤ 2⁻²⁴·Σ|w·x|): we allow 2⁻¹⁸·mag, i.e. the error of
 * a few ops amplified by up to ~30×, far below what a wrong index would produce.
 */
interface Tol {
  rel: number
  absPerMag: number
}
const TOL: Record<'op' | 'se' | 'program', Tol> = {
  op: { rel: 2 ** -23, absPerMag: 2 ** -40 },
  se: { rel: 2 ** -23, absPerMag: 2 ** -21 },
  program: { rel: 2 ** -20, absPerMag: 2 ** -18 },
}

function check(got: Float32Array, want: T, tol: Tol): string | null {
  if (got.length !== want.v.length) return `length ${got.length}, expected ${want.v.length}`
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - want.v[i])
    const bound = tol.rel * Math.abs(want.v[i]) + tol.absPerMag * want.mag[i]
    if (!(err <= bound)) return `at ${i}: got ${got[i]}, want ${want.v[i]} (error ${err.toExponential(2)} > ${bound.toExponential(2)})`
  }
  return null
}

// --- program builders -------------------------------------------------------------------

interface ConvSpec {
  cin: number
  cout: number
  k: number
  stride?: number
  pad?: number
  groups?: number
  relu?: boolean
}

function convOp(x: number, y: number, c: ConvSpec, residual?: number): Extract<Op, { op: 'conv' }> {
  const groups = c.groups ?? 1
  const fanIn = (c.cin / groups) * c.k * c.k
  return {
    op: 'conv',
    x,
    y,
    cin: c.cin,
    cout: c.cout,
    kh: c.k,
    kw: c.k,
    stride: c.stride ?? 1,
    pad: c.pad ?? 0,
    groups,
    weight: rand(c.cout * fanIn, 1 / Math.sqrt(fanIn)),
    bias: rand(c.cout, 0.5),
    residual,
    relu: c.relu ?? false,
  }
}

/** A one-op program whose output is that op's activation (flattened). */
function single(op: Op, inShape: Shape4, outShape: Shape4, numSlots = 2): Program {
  return { ops: [op], numSlots, inChannels: inShape[1], numClasses: outShape[1] * outShape[2] * outShape[3], output: op.y }
}

interface Case {
  name: string
  program: Program
  shape: Shape4
  tol: Tol
}

const cases: Case[] = []

// conv: k ∈ {1, 3, 7}, strides, padding, groups, odd sizes, residual/ReLU epilogues.
const convSpecs: [string, ConvSpec][] = [
  ['1×1 pointwise, odd cout', { cin: 8, cout: 5, k: 1 }],
  ['1×1 stride 2', { cin: 6, cout: 8, k: 1, stride: 2 }],
  ['3×3 pad 1', { cin: 5, cout: 7, k: 3, pad: 1 }],
  ['3×3 stride 2 pad 1', { cin: 4, cout: 6, k: 3, stride: 2, pad: 1 }],
  ['3×3 no pad', { cin: 3, cout: 4, k: 3 }],
  ['7×7 stride 2 pad 3 (stem)', { cin: 3, cout: 6, k: 7, stride: 2, pad: 3 }],
  ['3×3 groups 2', { cin: 6, cout: 4, k: 3, pad: 1, groups: 2 }],
  ['3×3 groups 4 stride 2', { cin: 8, cout: 12, k: 3, stride: 2, pad: 1, groups: 4 }],
  ['depthwise 3×3', { cin: 5, cout: 5, k: 3, pad: 1, groups: 5 }],
  ['depthwise 7×7 stride 2', { cin: 4, cout: 4, k: 7, stride: 2, pad: 3, groups: 4 }],
  ['depthwise multiplier 2', { cin: 4, cout: 8, k: 3, pad: 1, groups: 4 }],
  ['1×1 K=130 (long reduction)', { cin: 130, cout: 3, k: 1 }],
]
for (const [name, spec] of convSpecs) {
  for (const n of [1, 2]) {
    for (const epi of ['', 'relu', 'residual', 'residual+relu']) {
      const x: Shape4 = [n, spec.cin, 13, 11]
      const s = spec.stride ?? 1
      const p = spec.pad ?? 0
      const y: Shape4 = [n, spec.cout, Math.floor((13 + 2 * p - spec.k) / s) + 1, Math.floor((11 + 2 * p - spec.k) / s) + 1]
      const withRes = epi.startsWith('residual')
      const ops: Op[] = []
      // The residual is produced by a first conv (any op would do), so its slot is written.
      if (withRes) ops.push(convOp(0, 2, { cin: spec.cin, cout: spec.cout, k: spec.k, stride: s, pad: p }))
      ops.push(convOp(0, 1, { ...spec, relu: epi.endsWith('relu') }, withRes ? 2 : undefined))
      cases.push({
        name: `conv ${name}, n=${n}${epi ? `, ${epi}` : ''}`,
        program: { ops, numSlots: 3, inChannels: spec.cin, numClasses: y[1] * y[2] * y[3], output: 1 },
        shape: x,
        tol: TOL.op,
      })
    }
  }
}

// maxpool: floor and ceil, with padding; ceil mode that keeps a partial window and one
// where PyTorch drops the window that would start in the padding only.
const poolSpecs: [string, number, number, number, boolean, Shape4, [number, number]][] = [
  ['3×3/2 pad 1 floor (stem)', 3, 2, 1, false, [2, 3, 13, 11], [7, 6]],
  ['3×3/2 pad 1 ceil', 3, 2, 1, true, [1, 2, 13, 11], [7, 6]],
  ['3×3/2 ceil, partial last window', 3, 2, 0, true, [1, 2, 12, 10], [6, 5]],
  ['3×3/2 floor, same input', 3, 2, 0, false, [1, 2, 12, 10], [5, 4]],
  ['2×2/2 pad 1 ceil drops last window', 2, 2, 1, true, [1, 2, 5, 5], [3, 3]],
  ['2×2/1 floor', 2, 1, 0, false, [1, 3, 4, 7], [3, 6]],
]
for (const [name, k, stride, pad, ceil, x, [oh, ow]] of poolSpecs) {
  // The expected sizes are written out by hand (PyTorch's), not recomputed.
  const y: Shape4 = [x[0], x[1], oh, ow]
  cases.push({ name: `maxpool ${name}`, program: single({ op: 'maxpool', x: 0, y: 1, k, stride, pad, ceil }, x, y), shape: x, tol: { rel: 0, absPerMag: 0 } })
}

cases.push({ name: 'gap 13×11', program: single({ op: 'gap', x: 0, y: 1 }, [2, 3, 13, 11], [2, 3, 1, 1]), shape: [2, 3, 13, 11], tol: TOL.op })
cases.push({ name: 'gap 1×1', program: single({ op: 'gap', x: 0, y: 1 }, [1, 5, 1, 1], [1, 5, 1, 1]), shape: [1, 5, 1, 1], tol: TOL.op })

for (const [cin, cout] of [[37, 5], [64, 10]]) {
  const op: Op = { op: 'linear', x: 0, y: 1, cin, cout, weight: rand(cout * cin), bias: rand(cout) }
  cases.push({ name: `linear ${cin}→${cout}`, program: single(op, [3, cin, 1, 1], [3, cout, 1, 1]), shape: [3, cin, 1, 1], tol: TOL.op })
}

for (const biases of [true, false]) {
  for (const epi of ['', 'relu', 'residual', 'residual+relu']) {
    const c = 6
    const cr = 3
    const x: Shape4 = [2, c, 13, 11]
    const withRes = epi.startsWith('residual')
    const ops: Op[] = []
    if (withRes) ops.push(convOp(0, 2, { cin: c, cout: c, k: 1 }))
    ops.push({
      op: 'se',
      x: 0,
      y: 1,
      c,
      cr,
      w1: rand(cr * c, 2),
      b1: biases ? rand(cr) : undefined,
      w2: rand(c * cr, 2),
      b2: biases ? rand(c) : undefined,
      residual: withRes ? 2 : undefined,
      relu: epi.endsWith('relu'),
    })
    cases.push({
      name: `se ${biases ? 'with' : 'without'} biases${epi ? `, ${epi}` : ''}`,
      program: { ops, numSlots: 3, inChannels: c, numClasses: c * 13 * 11, output: 1 },
      shape: x,
      tol: TOL.se,
    })
  }
}

for (const relu of [false, true]) {
  const ops: Op[] = [convOp(0, 1, { cin: 3, cout: 3, k: 1 }), { op: 'add', a: 0, b: 1, y: 2, relu }]
  cases.push({
    name: `add${relu ? ' + relu' : ''} (input slot + conv)`,
    program: { ops, numSlots: 3, inChannels: 3, numClasses: 3 * 13 * 11, output: 2 },
    shape: [2, 3, 13, 11],
    tol: TOL.op,
  })
}

/**
 * A small SE-ResNet: stem, ceil-mode pool, one bottleneck with SE fused into the
 * residual add, a downsampling bottleneck with a projection shortcut (conv + residual),
 * gap, linear. Four slots, reused; the input slot 0 is overwritten mid-program.
 */
function tinySENet(): Program {
  const ops: Op[] = [
    convOp(0, 1, { cin: 3, cout: 8, k: 7, stride: 2, pad: 3, relu: true }),
    { op: 'maxpool', x: 1, y: 0, k: 3, stride: 2, pad: 0, ceil: true },
    convOp(0, 1, { cin: 8, cout: 4, k: 1, relu: true }),
    convOp(1, 2, { cin: 4, cout: 4, k: 3, pad: 1, relu: true }),
    convOp(2, 1, { cin: 4, cout: 8, k: 1 }),
    { op: 'se', x: 1, y: 3, c: 8, cr: 2, w1: rand(16), b1: rand(2), w2: rand(16), b2: rand(8), residual: 0, relu: true },
    // downsampling block: shortcut 1×1/2 into slot 0, main path, residual add fused into the last conv
    convOp(3, 0, { cin: 8, cout: 16, k: 1, stride: 2 }),
    convOp(3, 1, { cin: 8, cout: 8, k: 1, relu: true }),
    convOp(1, 2, { cin: 8, cout: 8, k: 3, stride: 2, pad: 1, groups: 4, relu: true }),
    convOp(2, 1, { cin: 8, cout: 16, k: 1 }, 0),
    { op: 'add', a: 1, b: 0, y: 2, relu: true },
    { op: 'gap', x: 2, y: 3 },
    { op: 'linear', x: 3, y: 0, cin: 16, cout: 10, weight: rand(160), bias: rand(10) },
  ]
  return { ops, numSlots: 4, inChannels: 3, numClasses: 10, output: 0 }
}
cases.push({ name: 'tiny SE-ResNet program, slot reuse', program: tinySENet(), shape: [2, 3, 29, 23], tol: TOL.program })

// --- the tests --------------------------------------------------------------------------

for (const backend of backends) {
  for (const c of cases) {
    test(`${backend.name}: ${c.name}`, (t) => {
      const model = backend.compile(c.program)
      try {
        const x = rand(size(c.shape), 2)
        const x0 = x.slice()
        const want = refRun(c.program, x, c.shape)
        const got = model.forwardSync(x, c.shape)
        t.is(check(got, want, c.tol), null)
        t.deepEqual(x, x0, 'the input is never written')
      } finally {
        model.dispose()
      }
    })
  }

  const ref = (m: CompiledModel, p: Program, shape: Shape4, x: Float32Array): void => {
    // helper for the lifecycle tests below: forwardSync against the reference
    const r = check(m.forwardSync(x, shape), refRun(p, x, shape), TOL.program)
    if (r !== null) throw new Error(r)
  }

  test(`${backend.name}: buffers reused across two input shapes, fresh logits each call`, (t) => {
    const p = tinySENet()
    const m = backend.compile(p)
    const a: Shape4 = [1, 3, 29, 23]
    const b: Shape4 = [3, 3, 40, 33]
    const xa = rand(size(a))
    const xb = rand(size(b))
    t.notThrows(() => ref(m, p, a, xa))
    t.notThrows(() => ref(m, p, b, xb))
    const y1 = m.forwardSync(xa, a)
    const y2 = m.forwardSync(xa, a)
    t.not(y1.buffer, y2.buffer)
    t.deepEqual(y1, y2)
    y1.fill(0) // the caller owns the result: this must not disturb later calls
    t.notThrows(() => ref(m, p, a, xa))
    t.notThrows(() => ref(m, p, b, xb))
    m.dispose()
  })

  test(`${backend.name}: forward equals forwardSync bitwise`, async (t) => {
    const p = tinySENet()
    const m = backend.compile(p)
    const shape: Shape4 = [2, 3, 29, 23]
    const x = rand(size(shape))
    const sync = m.forwardSync(x, shape)
    t.deepEqual(await m.forward(x, shape), sync)
    if ('forwardThread' in m) t.is(m.forwardThread, 'worker', 'forward ran off the JS thread')
    m.dispose()
  })

  test(`${backend.name}: concurrent forwards of two shapes all resolve correctly`, async (t) => {
    const p = tinySENet()
    const m = backend.compile(p)
    const shapes: Shape4[] = [
      [1, 3, 29, 23],
      [2, 3, 17, 21],
    ]
    const inputs = Array.from({ length: 10 }, (_, i) => ({ shape: shapes[i % 2], x: rand(size(shapes[i % 2])) }))
    const got = await Promise.all(inputs.map(({ x, shape }) => m.forward(x, shape)))
    inputs.forEach(({ x, shape }, i) => t.deepEqual(got[i], m.forwardSync(x, shape), `request ${i}`))
    m.dispose()
  })

  test(`${backend.name}: input shape errors (sync throws, async rejects)`, async (t) => {
    const m = backend.compile(tinySENet())
    t.throws(() => m.forwardSync(new Float32Array(2 * 29 * 23), [1, 2, 29, 23]), { instanceOf: RangeError, message: /channels/ })
    t.throws(() => m.forwardSync(new Float32Array(5), [1, 3, 29, 23]), { instanceOf: RangeError, message: /values/ })
    t.throws(() => m.forwardSync(new Float32Array(3 * 4), [1, 3, 2, 2]), { instanceOf: RangeError, message: /smaller than/ })
    await t.throwsAsync(m.forward(new Float32Array(5), [1, 3, 29, 23]), { instanceOf: RangeError, message: /values/ })
    // still serves good requests after a rejected one
    const x = rand(3 * 29 * 23)
    t.deepEqual(await m.forward(x, [1, 3, 29, 23]), m.forwardSync(x, [1, 3, 29, 23]))
    m.dispose()
  })

  test(`${backend.name}: malformed programs are rejected at compile`, (t) => {
    const good = tinySENet()
    const bad = (edit: (p: Program) => void): Program => {
      const p = { ...good, ops: good.ops.map((o) => ({ ...o })) as Op[] }
      edit(p)
      return p
    }
    t.throws(() => backend.compile(bad((p) => ((p.ops[0] as { weight: Float32Array }).weight = new Float32Array(3)))), { message: /weight has 3 values/ })
    t.throws(() => backend.compile(bad((p) => ((p.ops[2] as { y: number }).y = 0))), { message: /also an input/ })
    t.throws(() => backend.compile(bad((p) => ((p.ops[2] as { x: number }).x = 9))), { message: /not in 0\.\.3/ })
    t.throws(() => backend.compile(bad((p) => ((p.ops[0] as { groups: number }).groups = 2))), { message: /multiples of groups/ })
  })

  test(`${backend.name}: forward after dispose rejects`, async (t) => {
    const m = backend.compile(tinySENet())
    const x = rand(3 * 29 * 23)
    await m.forward(x, [1, 3, 29, 23])
    m.dispose()
    await t.throwsAsync(m.forward(x, [1, 3, 29, 23]), { message: /disposed/ })
  })
}
