/**
 * From an {@link SEResNetConfig} to (a) the state_dict it corresponds to (names and
 * shapes, in PyTorch's order), (b) a straight-line {@link Program} with BatchNorm folded
 * into the convolutions, and (c) deterministic random parameters.
 *
 * One walk over the architecture ({@link describe}) feeds all three, so the names the
 * weights are looked up by and the ops they end up in cannot drift apart.
 *
 * @packageDocumentation
 */

import type { ResolvedConfig } from './config'
import { seChannels } from './config'
import type { Op, Program, Slot } from './program'

/** PyTorch's default BatchNorm epsilon (timm and Cadene keep it). */
export const BN_EPS = 1e-5

/** One entry of a model's state_dict. */
export interface ParamSpec {
  /** The state_dict key, e.g. `layer1.0.se.fc1.bias`. */
  name: string
  shape: number[]
  /** 'param' for `model.parameters()`, 'buffer' for BN running statistics and `num_batches_tracked` (int64 scalar). */
  kind: 'param' | 'buffer'
}

/** A convolution followed by its BatchNorm, as found in the module tree. */
export interface ConvBN {
  conv: string
  bn: string
  cin: number
  cout: number
  k: number
  stride: number
  pad: number
  groups: number
}

/** A Squeeze-and-Excitation unit: `prefix.fc1`, `prefix.fc2` (1×1 convs). */
export interface SEUnit {
  prefix: string
  c: number
  cr: number
}

/** One residual block. */
export interface BlockDesc {
  /** e.g. `layer2.0` */
  prefix: string
  /** The residual branch: 2 (basic) or 3 (bottleneck) conv+BN, ReLU after all but the last. */
  convs: ConvBN[]
  /** Projection shortcut (`downsample.0` conv, `downsample.1` BN), or none for the identity. */
  downsample?: ConvBN
  se?: SEUnit
}

/** The whole network, in execution order. */
export interface ModelDesc {
  stem: ConvBN[]
  pool: { k: number; stride: number; pad: number; ceil: boolean }
  blocks: BlockDesc[]
  head: { name: string; cin: number; cout: number }
}

/** Walks the architecture the way timm's / Cadene's constructors do. */
export function describe(c: ResolvedConfig): ModelDesc {
  const legacy = c.keys === 'legacy'
  const cbn = (conv: string, bn: string, cin: number, cout: number, k: number, stride: number, pad: number, groups = 1): ConvBN =>
    ({ conv, bn, cin, cout, k, stride, pad, groups })
  const stem: ConvBN[] = []
  if (c.stem === 'legacy3x3') {
    const m = c.stemMidWidth
    stem.push(cbn('layer0.conv1', 'layer0.bn1', c.inChans, m, 3, 2, 1))
    stem.push(cbn('layer0.conv2', 'layer0.bn2', m, m, 3, 1, 1))
    stem.push(cbn('layer0.conv3', 'layer0.bn3', m, c.stemWidth, 3, 1, 1))
  } else {
    const p = legacy ? 'layer0.' : ''
    stem.push(cbn(`${p}conv1`, `${p}bn1`, c.inChans, c.stemWidth, 7, 2, 3))
  }
  const pool = c.stem === 'timm' ? { k: 3, stride: 2, pad: 1, ceil: false } : { k: 3, stride: 2, pad: 0, ceil: true }

  const blocks: BlockDesc[] = []
  let inC = c.stemWidth
  for (let s = 0; s < 4; s++) {
    const planes = c.channels[s]
    const outC = planes * c.expansion
    for (let i = 0; i < c.layers[s]; i++) {
      const stride = s > 0 && i === 0 ? 2 : 1
      const prefix = `layer${s + 1}.${i}`
      const convs: ConvBN[] = []
      const name = (j: number): [string, string] => [`${prefix}.conv${j}`, `${prefix}.bn${j}`]
      if (c.block === 'basic') {
        convs.push(cbn(...name(1), inC, planes, 3, stride, 1))
        convs.push(cbn(...name(2), planes, outC, 3, 1, 1))
      } else {
        const [w1, w2] = c.bottleneckWidth === 'senet154'
          ? [planes * 2, planes * 4]
          : [Math.floor((planes * c.baseWidth) / 64) * c.groups, Math.floor((planes * c.baseWidth) / 64) * c.groups]
        if (w1 < 1 || w2 % c.groups !== 0 || w1 % c.groups !== 0) {
          throw new RangeError(`config: stage ${s + 1} bottleneck width ${w1}/${w2} is not a positive multiple of groups ${c.groups}`)
        }
        const s1 = c.strideOn === '1x1' ? stride : 1
        convs.push(cbn(...name(1), inC, w1, 1, s1, 0))
        convs.push(cbn(...name(2), w1, w2, 3, stride / s1, 1, c.groups))
        convs.push(cbn(...name(3), w2, outC, 1, 1, 0))
      }
      const block: BlockDesc = { prefix, convs }
      if (c.se !== 'none') {
        const ch = c.se === 'pre' ? inC : outC
        block.se = { prefix: `${prefix}.${legacy ? 'se_module' : 'se'}`, c: ch, cr: seChannels(c, ch) }
      }
      if (stride !== 1 || inC !== outC) {
        const [k, pad] = s === 0 ? [1, 0] : [c.downsampleKernel, c.downsamplePadding]
        block.downsample = cbn(`${prefix}.downsample.0`, `${prefix}.downsample.1`, inC, outC, k, stride, pad)
      }
      blocks.push(block)
      inC = outC
    }
  }
  return { stem, pool, blocks, head: { name: legacy ? 'last_linear' : 'fc', cin: inC, cout: c.numClasses } }
}

function convBnSpecs(x: ConvBN, out: ParamSpec[]): void {
  out.push({ name: `${x.conv}.weight`, shape: [x.cout, x.cin / x.groups, x.k, x.k], kind: 'param' })
  bnSpecs(x.bn, x.cout, out)
}

function bnSpecs(bn: string, c: number, out: ParamSpec[]): void {
  out.push({ name: `${bn}.weight`, shape: [c], kind: 'param' })
  out.push({ name: `${bn}.bias`, shape: [c], kind: 'param' })
  out.push({ name: `${bn}.running_mean`, shape: [c], kind: 'buffer' })
  out.push({ name: `${bn}.running_var`, shape: [c], kind: 'buffer' })
  out.push({ name: `${bn}.num_batches_tracked`, shape: [], kind: 'buffer' })
}

/**
 * The model's state_dict entries in PyTorch's order (module registration order):
 * what `timm.create_model(arch).state_dict()` lists, `num_batches_tracked` included.
 */
export function paramSpecs(c: ResolvedConfig): ParamSpec[] {
  const d = describe(c)
  const out: ParamSpec[] = []
  // Cadene's blocks register conv/bn pairs interleaved; the stem's convs are all in
  // layer0 in order, timm's stem is conv1 then bn1: the same sequence.
  for (const x of d.stem) convBnSpecs(x, out)
  for (const b of d.blocks) {
    for (const x of b.convs) convBnSpecs(x, out)
    if (b.se) {
      const { prefix, c: ch, cr } = b.se
      out.push({ name: `${prefix}.fc1.weight`, shape: [cr, ch, 1, 1], kind: 'param' })
      if (c.seBias) out.push({ name: `${prefix}.fc1.bias`, shape: [cr], kind: 'param' })
      out.push({ name: `${prefix}.fc2.weight`, shape: [ch, cr, 1, 1], kind: 'param' })
      if (c.seBias) out.push({ name: `${prefix}.fc2.bias`, shape: [ch], kind: 'param' })
    }
    if (b.downsample) convBnSpecs(b.downsample, out)
  }
  out.push({ name: `${d.head.name}.weight`, shape: [d.head.cout, d.head.cin], kind: 'param' })
  out.push({ name: `${d.head.name}.bias`, shape: [d.head.cout], kind: 'param' })
  return out
}

/** Number of elements in `model.parameters()` (BN running statistics excluded). */
export function countParams(c: ResolvedConfig): number {
  let n = 0
  for (const p of paramSpecs(c)) if (p.kind === 'param') n += p.shape.reduce((a, b) => a * b, 1)
  return n
}

/** Where {@link buildProgram} reads tensors from: a Map, or a lazy loader. */
export interface ParamSource {
  get(name: string): Float32Array | undefined
}

/** Options of {@link buildProgram}. */
export interface BuildOptions {
  /**
   * Fold BatchNorm into the conv weight arrays the source returns instead of into copies.
   * Only for sources that hand out fresh arrays nobody else holds (a loader, or a Map
   * about to be dropped): it halves peak memory while loading.
   */
  inPlace?: boolean
}

/**
 * Compiles the config and its parameters to a {@link Program}.
 *
 * BN is folded in float64: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`. The SE unit is
 * fused with what follows it where the placement allows (standard:
 * `se(bn3 out, residual = shortcut, relu)`; identity: `se(shortcut, residual = bn3 out,
 * relu)`); without SE (or with SE-PRE / SE-POST) the residual add and ReLU ride in the
 * last conv's epilogue. Slots are assigned by liveness; slot 0 (the caller's input) is
 * never written, so an executor may alias it to the caller's array.
 * @throws RangeError naming the first tensor that is missing or has the wrong length.
 */
export function buildProgram(c: ResolvedConfig, params: ParamSource, opts: BuildOptions = {}): Program {
  const d = describe(c)
  const inPlace = opts.inPlace === true
  const get = (name: string, len: number): Float32Array => {
    const a = params.get(name)
    if (!(a instanceof Float32Array)) throw new RangeError(`buildProgram: parameter ${name} is missing`)
    if (a.length !== len) throw new RangeError(`buildProgram: parameter ${name} has ${a.length} elements, expected ${len}`)
    return a
  }
  // Tensors the program references as they are (SE, classifier): copied unless we own them.
  const keep = (name: string, len: number): Float32Array => (inPlace ? get(name, len) : get(name, len).slice())

  // Ops over SSA values first; slots are assigned afterwards by liveness.
  type VOp = { op: Op; ins: number[]; out: number }
  const vops: VOp[] = []
  let nextValue = 1 // value 0 is the input
  const emit = (make: (ins: number[], out: number) => Op, ins: number[]): number => {
    const out = nextValue++
    vops.push({ op: make(ins, out), ins, out })
    return out
  }

  const conv = (x: ConvBN, input: number, relu: boolean, residual?: number): number => {
    const wlen = x.cout * (x.cin / x.groups) * x.k * x.k
    const w = get(`${x.conv}.weight`, wlen)
    const gamma = get(`${x.bn}.weight`, x.cout)
    const beta = get(`${x.bn}.bias`, x.cout)
    const mean = get(`${x.bn}.running_mean`, x.cout)
    const variance = get(`${x.bn}.running_var`, x.cout)
    const weight = inPlace ? w : new Float32Array(wlen)
    const bias = new Float32Array(x.cout)
    const per = wlen / x.cout
    for (let o = 0; o < x.cout; o++) {
      const scale = gamma[o] / Math.sqrt(variance[o] + BN_EPS)
      bias[o] = beta[o] - mean[o] * scale
      for (let j = o * per, e = j + per; j < e; j++) weight[j] = w[j] * scale
    }
    const ins = residual === undefined ? [input] : [input, residual]
    return emit(([a, r], y) => ({
      op: 'conv', x: a, y, cin: x.cin, cout: x.cout, kh: x.k, kw: x.k, stride: x.stride, pad: x.pad,
      groups: x.groups, weight, bias, ...(r === undefined ? {} : { residual: r }), relu,
    }), ins)
  }

  const se = (u: SEUnit, input: number, relu: boolean, residual?: number): number => {
    const w1 = keep(`${u.prefix}.fc1.weight`, u.cr * u.c)
    const w2 = keep(`${u.prefix}.fc2.weight`, u.c * u.cr)
    const b1 = c.seBias ? keep(`${u.prefix}.fc1.bias`, u.cr) : undefined
    const b2 = c.seBias ? keep(`${u.prefix}.fc2.bias`, u.c) : undefined
    const ins = residual === undefined ? [input] : [input, residual]
    return emit(([a, r], y) => ({
      op: 'se', x: a, y, c: u.c, cr: u.cr, w1, w2,
      ...(b1 ? { b1 } : {}), ...(b2 ? { b2 } : {}), ...(r === undefined ? {} : { residual: r }), relu,
    }), ins)
  }

  let v = 0
  for (const x of d.stem) v = conv(x, v, true)
  v = emit(([a], y) => ({ op: 'maxpool', x: a, y, ...d.pool }), [v])

  for (const b of d.blocks) {
    const input = v
    const shortcut = (): number => (b.downsample ? conv(b.downsample, input, false) : input)
    const [first, ...rest] = b.convs
    const last = rest.pop() as ConvBN
    let t = b.se && c.se === 'pre' ? se(b.se, input, false) : input
    t = conv(first, t, true)
    for (const x of rest) t = conv(x, t, true)
    const branchRelu = c.lastBranchReLU
    // The residual add (+ ReLU) rides in the last conv's epilogue unless a ReLU must come
    // between the BN and the add (Cadene's basic block): then a separate add op.
    const convAdd = (input: number, sc: number): number =>
      branchRelu ? emit(([a, r], y) => ({ op: 'add', a, b: r, y, relu: true }), [conv(last, input, true), sc]) : conv(last, input, true, sc)
    if (!b.se || c.se === 'pre') {
      v = convAdd(t, shortcut())
    } else if (c.se === 'standard') {
      // Shortcut first: the conv2 output stays live (and its slot untouched) until the
      // SE op, which lets the executor run conv3 inside the SE op with the gates in its
      // epilogue (graph.rs, `gate_pair`).
      const sc = shortcut()
      t = conv(last, t, branchRelu)
      v = se(b.se, t, true, sc)
    } else if (c.se === 'post') {
      v = se(b.se, convAdd(t, shortcut()), false)
    } else {
      t = conv(last, t, branchRelu)
      v = se(b.se, shortcut(), true, t)
    }
  }

  v = emit(([a], y) => ({ op: 'gap', x: a, y }), [v])
  const { name, cin, cout } = d.head
  const weight = keep(`${name}.weight`, cout * cin)
  const bias = keep(`${name}.bias`, cout)
  v = emit(([a], y) => ({ op: 'linear', x: a, y, cin, cout, weight, bias }), [v])

  return assignSlots(vops, v, c)
}

/** Maps SSA values to reusable slots: a value's slot is freed after its last reader. */
function assignSlots(vops: { op: Op; ins: number[]; out: number }[], output: number, c: ResolvedConfig): Program {
  const lastUse = new Map<number, number>()
  vops.forEach((o, i) => o.ins.forEach((v) => lastUse.set(v, i)))
  const slotOf = new Map<number, Slot>([[0, 0]])
  const free: Slot[] = []
  let numSlots = 1
  const ops: Op[] = []
  vops.forEach((o, i) => {
    // Take the output slot before releasing the inputs: an op never writes a slot it reads.
    const y = free.length > 0 ? (free.pop() as Slot) : numSlots++
    slotOf.set(o.out, y)
    for (const v of new Set(o.ins)) {
      if (lastUse.get(v) === i && v !== 0) free.push(slotOf.get(v) as Slot)
    }
    ops.push(remap(o.op, slotOf))
  })
  return { ops, numSlots, inChannels: c.inChans, numClasses: c.numClasses, output: slotOf.get(output) as Slot }
}

function remap(op: Op, slotOf: Map<number, Slot>): Op {
  const s = (v: number): Slot => slotOf.get(v) as Slot
  switch (op.op) {
    case 'add':
      return { ...op, a: s(op.a), b: s(op.b), y: s(op.y) }
    case 'conv':
    case 'se':
      return { ...op, x: s(op.x), y: s(op.y), ...(op.residual === undefined ? {} : { residual: s(op.residual) }) }
    default:
      return { ...op, x: s(op.x), y: s(op.y) }
  }
}

// ------------------------------------------------------------------------- shapes

/**
 * Output size of a conv or max-pool along one axis, by PyTorch's rules
 * (`pooling_output_shape` for ceil mode: a last window starting in the padding is
 * dropped); a result < 1 means PyTorch rejects the input.
 */
export function outputSize(size: number, k: number, stride: number, pad: number, ceil: boolean): number {
  const num = size + 2 * pad - k + (ceil ? stride - 1 : 0)
  let out = Math.floor(num / stride) + 1
  if (ceil && (out - 1) * stride >= size + pad) out--
  return out
}

/**
 * Whether a spatial size (one axis) survives every op of the program, i.e. stays ≥ 1.
 * Height and width are independent: every kernel is square and every stride symmetric.
 */
export function sizeFits(program: Program, size: number): boolean {
  const sizes = new Map<Slot, number>([[0, size]])
  for (const op of program.ops) {
    let out: number
    if (op.op === 'conv') out = outputSize(sizes.get(op.x) as number, op.kh, op.stride, op.pad, false)
    else if (op.op === 'maxpool') out = outputSize(sizes.get(op.x) as number, op.k, op.stride, op.pad, op.ceil)
    else if (op.op === 'gap' || op.op === 'linear') out = 1
    else out = sizes.get(op.op === 'add' ? op.a : op.x) as number
    if (!(out >= 1)) return false
    sizes.set(op.y, out)
  }
  return true
}

/**
 * Whether a spatial size survives the architecture (same rule as {@link sizeFits}, from
 * the config alone, without weights).
 */
export function sizeFitsConfig(c: ResolvedConfig, size: number): boolean {
  const d = describe(c)
  const through = (s: number, x: ConvBN): number => outputSize(s, x.k, x.stride, x.pad, false)
  let s = d.stem.reduce(through, size)
  if (s < 1) return false
  s = outputSize(s, d.pool.k, d.pool.stride, d.pool.pad, d.pool.ceil)
  for (const b of d.blocks) {
    if (s < 1) return false
    let t = s
    for (const x of b.convs) {
      t = through(t, x)
      if (t < 1) return false
    }
    if (b.downsample && through(s, b.downsample) < 1) return false
    s = t
  }
  return s >= 1
}

/** The smallest input height (or width) an architecture accepts. */
export function minInputSizeForConfig(c: ResolvedConfig): number {
  for (let s = 1; s <= 4096; s++) if (sizeFitsConfig(c, s)) return s
  throw new RangeError('minInputSize: no input size up to 4096 fits this architecture')
}

/** The smallest input height (or width) the program accepts (sizes are monotone). */
export function minInputSize(program: Program): number {
  for (let s = 1; s <= 4096; s++) if (sizeFits(program, s)) return s
  throw new RangeError('minInputSize: no input size up to 4096 fits this program')
}

// ------------------------------------------------------------------------- random init

/** splitmix32: a small, fast, well-mixed 32-bit generator; deterministic across platforms. */
function splitmix32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x9e3779b9) | 0
    let z = a
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296
  }
}

function fillNormal(a: Float32Array, std: number, rand: () => number): void {
  for (let i = 0; i < a.length; i += 2) {
    // Box-Muller; 1 - u keeps the log argument in (0, 1].
    const r = Math.sqrt(-2 * Math.log(1 - rand())) * std
    const t = 2 * Math.PI * rand()
    a[i] = r * Math.cos(t)
    if (i + 1 < a.length) a[i + 1] = r * Math.sin(t)
  }
}

/**
 * Deterministic random parameters (same seed → same bits everywhere), for benchmarks
 * and tests without pretrained weights. Every state_dict tensor except
 * `num_batches_tracked` is present.
 *
 * - convs: He/Kaiming normal, std √(2 / fan_in), so conv+ReLU preserves the second moment;
 * - BN: γ = 1, β = 0, μ = 0, σ² = 1 (folds to the identity), except the last BN of each
 *   residual branch, whose σ² is the total number of blocks B: each block then adds ≈ 1/B
 *   of the stream's energy, so activations grow by at most ≈ e over the whole depth
 *   (a non-degenerate version of timm's zero-init-last) and logits stay O(1) for 18–154 layers;
 * - SE: normal with std 1/√fan_in, zero biases (gates ≈ sigmoid(O(1)));
 * - classifier: normal with std 1/√cin, zero bias.
 */
export function randomParams(c: ResolvedConfig, seed = 0): Map<string, Float32Array> {
  const d = describe(c)
  const rand = splitmix32(seed ^ 0x5e7e7)
  const out = new Map<string, Float32Array>()
  const lastBn = new Set(d.blocks.map((b) => b.convs[b.convs.length - 1].bn))
  for (const p of paramSpecs(c)) {
    if (p.name.endsWith('.num_batches_tracked')) continue
    const n = p.shape.reduce((a, b) => a * b, 1)
    const a = new Float32Array(n)
    const dot = p.name.lastIndexOf('.')
    const module = p.name.slice(0, dot)
    const field = p.name.slice(dot + 1)
    if (p.shape.length === 4) {
      const fanIn = p.shape[1] * p.shape[2] * p.shape[3]
      const isSe = /\.(se|se_module)\.fc[12]$/.test(module)
      fillNormal(a, isSe ? Math.sqrt(1 / fanIn) : Math.sqrt(2 / fanIn), rand)
    } else if (p.shape.length === 2) {
      fillNormal(a, Math.sqrt(1 / p.shape[1]), rand)
    } else if (field === 'weight') {
      a.fill(1)
    } else if (field === 'running_var') {
      a.fill(lastBn.has(module) ? d.blocks.length : 1)
    } // bias, running_mean: 0
    out.set(p.name, a)
  }
  return out
}
