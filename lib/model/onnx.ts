/**
 * Export of a compiled {@link Program} as an ONNX model (opset 13), so that the same
 * weights can be run by other engines (onnxruntime, for the benchmarks) or inspected
 * with standard tools (Netron, `onnx.checker`).
 *
 * The graph is the program op for op, with BatchNorm already folded into the
 * convolutions, so it computes exactly what senet computes:
 *
 * | program op | ONNX nodes |
 * |---|---|
 * | conv | Conv (+ Add residual) (+ Relu) |
 * | maxpool | MaxPool (pads, ceil_mode) |
 * | se | GlobalAveragePool → Conv 1×1 (fc1) → Relu → Conv 1×1 (fc2) → Sigmoid → Mul (+ Add residual) (+ Relu) |
 * | add | Add (+ Relu) |
 * | gap | GlobalAveragePool |
 * | linear | Flatten → Gemm (transB = 1) |
 *
 * Input `input` is [N, C, H, W] with symbolic N, H, W; output `logits` is [N, classes].
 * Weights are float32 initializers stored as little-endian `raw_data`.
 *
 * The protobuf encoding is written here (about a hundred lines) instead of depending on
 * protobufjs + a generated ONNX schema: the package then has no runtime dependency, and
 * the encoder never holds a second copy of the weights: initializers are zero-copy
 * views of the program's arrays until the single output buffer is filled, or they are
 * streamed to a file ({@link programToOnnxFile}) with no output buffer at all. The
 * field numbers are those of `onnx/onnx.proto` (ONNX 1.10+); `__test__/onnx.spec.ts`
 * decodes the result with the `onnx-proto` schema package and runs it in onnxruntime.
 *
 * @packageDocumentation
 */

import { promises as fsp } from 'fs'
import type { Op, Program, Slot } from './program'

/** ONNX opset the graph is written for (every op used is there; later opsets only add element types). */
export const ONNX_OPSET = 13
/** IR version matching opset 13 (ONNX 1.8). */
export const ONNX_IR_VERSION = 7

/** Options of {@link programToOnnx}. */
export interface OnnxExportOptions {
  /** `graph.name` (default `'senet'`). */
  graphName?: string
  /** `model.doc_string`, e.g. the architecture and where the weights came from. */
  docString?: string
  /** `model.producer_version` (default: empty). */
  producerVersion?: string
  /**
   * Fixes the input's height and width, e.g. `[224, 224]`, instead of leaving them
   * symbolic (`H`, `W`); the batch stays symbolic. The graph then accepts only that size,
   * and onnxruntime can plan for it: measured 1–7% faster in onnxruntime-node 1.30 on
   * resnet50 / seresnet50 at 224×224 (most on resnet50 at batch 1, 2 threads). Used by
   * `bench:model` so that the baseline runs its best graph.
   */
  inputSize?: readonly [height: number, width: number]
  /**
   * Fixes the batch (the first dimension of the input and of the logits), e.g. `1`,
   * instead of leaving it symbolic (`N`): for engines that want static shapes, and
   * so that onnxruntime can plan every buffer for that batch. The graph then accepts
   * only that batch. `bench:model` exports one graph per batch size it times.
   */
  batchSize?: number
}

/** The keys of {@link OnnxExportOptions}. */
export const ONNX_EXPORT_OPTIONS = ['graphName', 'docString', 'producerVersion', 'inputSize', 'batchSize'] as const

/**
 * Every export option checked (before anything is encoded or written): `opts` an object
 * or undefined, no unknown key, strings where strings are expected, `inputSize` per
 * {@link checkInputSize}, `batchSize` a positive safe integer. `who` prefixes errors.
 * @throws TypeError / RangeError naming the option, with what was expected and given.
 */
export function checkOnnxOptions(opts: unknown, who = 'onnx export'): OnnxExportOptions {
  if (opts === undefined) return {}
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts) || ArrayBuffer.isView(opts)) {
    throw new TypeError(`${who}: opts must be an object or undefined, got ${opts === null ? 'null' : Array.isArray(opts) ? 'an array' : typeof opts}`)
  }
  const o = opts as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!(ONNX_EXPORT_OPTIONS as readonly string[]).includes(key)) {
      throw new TypeError(`${who}: opts.${key} is not an export option (known: ${ONNX_EXPORT_OPTIONS.join(', ')})`)
    }
  }
  for (const key of ['graphName', 'docString', 'producerVersion'] as const) {
    if (o[key] !== undefined && typeof o[key] !== 'string') {
      throw new TypeError(`${who}: opts.${key} must be a string, got ${describeValue(o[key])}`)
    }
  }
  checkInputSize(o.inputSize, who)
  checkBatchSize(o.batchSize, who)
  return o as OnnxExportOptions
}

function describeValue(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number') return JSON.stringify(v) ?? String(v)
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v
}

/** `opts.batchSize` checked: undefined, or a positive safe integer; `who` prefixes errors. */
export function checkBatchSize(v: unknown, who = 'onnx export'): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number') throw new TypeError(`${who}: opts.batchSize must be a number, got ${describeValue(v)}`)
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${who}: opts.batchSize must be a positive integer, got ${v}`)
  return v
}

/** `opts.inputSize` checked: undefined, or two positive safe integers; `who` prefixes errors. */
export function checkInputSize(v: unknown, who = 'onnx export'): readonly [number, number] | undefined {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.length !== 2) {
    throw new TypeError(`${who}: opts.inputSize must be [height, width], got ${JSON.stringify(v) ?? typeof v}`)
  }
  v.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) {
      throw new RangeError(`${who}: opts.inputSize[${i}] (${i ? 'width' : 'height'}) must be a positive integer, got ${JSON.stringify(d) ?? typeof d}`)
    }
  })
  return [v[0], v[1]]
}

// ------------------------------------------------------------------------- protobuf

const WIRE_VARINT = 0
const WIRE_LEN = 2
const utf8 = new TextEncoder()

/**
 * A protobuf message being written. Nested messages and large byte fields are kept by
 * reference (never copied) and only concatenated when the caller reads
 * {@link ProtoWriter.chunks}; a child must be complete before it is added, because its
 * length is written in front of it.
 */
class ProtoWriter {
  /** Encoded length in bytes. */
  size = 0
  private readonly parts: (Uint8Array | ProtoWriter)[] = []
  private pending: number[] = []

  private byte(b: number): void {
    this.pending.push(b)
    this.size++
  }

  private varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`onnx export: cannot encode ${v} as a non-negative varint`)
    while (v >= 0x80) {
      this.byte((v % 0x80) | 0x80)
      v = Math.floor(v / 0x80)
    }
    this.byte(v)
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire)
  }

  private flush(): void {
    if (this.pending.length > 0) {
      this.parts.push(Uint8Array.from(this.pending))
      this.pending = []
    }
  }

  /** int32 / int64 / enum field (non-negative values only: all this exporter needs). */
  int(field: number, v: number): this {
    this.tag(field, WIRE_VARINT)
    this.varint(v)
    return this
  }

  /** Repeated int64, unpacked (the proto2 default of onnx.proto; parsers accept both forms). */
  ints(field: number, vs: readonly number[]): this {
    for (const v of vs) this.int(field, v)
    return this
  }

  string(field: number, s: string): this {
    const b = utf8.encode(s)
    this.tag(field, WIRE_LEN)
    this.varint(b.length)
    for (const x of b) this.byte(x)
    return this
  }

  /** A bytes field holding `b` by reference. */
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, WIRE_LEN)
    this.varint(b.length)
    this.flush()
    this.parts.push(b)
    this.size += b.length
    return this
  }

  message(field: number, m: ProtoWriter): this {
    this.tag(field, WIRE_LEN)
    this.varint(m.size)
    this.flush()
    this.parts.push(m)
    this.size += m.size
    return this
  }

  /** The encoding, in order, as views (no copy of byte fields). */
  *chunks(): Generator<Uint8Array> {
    this.flush()
    for (const p of this.parts) {
      if (p instanceof Uint8Array) yield p
      else yield* p.chunks()
    }
  }
}

// Field numbers from onnx/onnx.proto.
const ModelF = { irVersion: 1, producerName: 2, producerVersion: 3, docString: 6, graph: 7, opsetImport: 8 }
const OpsetF = { domain: 1, version: 2 }
const GraphF = { node: 1, name: 2, initializer: 5, input: 11, output: 12 }
const NodeF = { input: 1, output: 2, name: 3, opType: 4, attribute: 5 }
const AttrF = { name: 1, i: 3, ints: 8, type: 20 }
const AttrType = { INT: 2, INTS: 7 }
const TensorF = { dims: 1, dataType: 2, name: 8, rawData: 9 }
const ValueInfoF = { name: 1, type: 2 }
const TypeF = { tensorType: 1 }
const TensorTypeF = { elemType: 1, shape: 2 }
const ShapeF = { dim: 1 }
const DimF = { value: 1, param: 2 }
const FLOAT = 1

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** The little-endian bytes of `a`: a view on little-endian hosts (all supported ones). */
function leBytes(a: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
  const out = new Uint8Array(a.byteLength)
  const dv = new DataView(out.buffer)
  a.forEach((v, i) => dv.setFloat32(i * 4, v, true))
  return out
}

type Attr = [name: string, value: number | readonly number[]]

function attribute([name, value]: Attr): ProtoWriter {
  const a = new ProtoWriter().string(AttrF.name, name)
  if (typeof value === 'number') a.int(AttrF.type, AttrType.INT).int(AttrF.i, value)
  else a.int(AttrF.type, AttrType.INTS).ints(AttrF.ints, value)
  return a
}

/** A tensor-typed value: [dims], each a size or a symbolic name. */
function valueInfo(name: string, dims: readonly (number | string)[]): ProtoWriter {
  const shape = new ProtoWriter()
  for (const d of dims) {
    const dim = typeof d === 'number' ? new ProtoWriter().int(DimF.value, d) : new ProtoWriter().string(DimF.param, d)
    shape.message(ShapeF.dim, dim)
  }
  const tensorType = new ProtoWriter().int(TensorTypeF.elemType, FLOAT).message(TensorTypeF.shape, shape)
  const type = new ProtoWriter().message(TypeF.tensorType, tensorType)
  return new ProtoWriter().string(ValueInfoF.name, name).message(ValueInfoF.type, type)
}

// ------------------------------------------------------------------------- graph

/** Builds the graph's nodes and initializers; value names are unique per op output. */
class GraphBuilder {
  readonly nodes: ProtoWriter[] = []
  readonly initializers: ProtoWriter[] = []
  /** The ONNX value currently held by each program slot. */
  private readonly slotValue = new Map<Slot, string>()
  private readonly opTypes = new Map<string, number>()

  constructor(input: string) {
    this.slotValue.set(0, input)
  }

  read(slot: Slot, opIndex: number): string {
    const v = this.slotValue.get(slot)
    if (v === undefined) throw new RangeError(`onnx export: op ${opIndex} reads slot ${slot} before any op wrote it`)
    return v
  }

  write(slot: Slot, value: string): void {
    this.slotValue.set(slot, value)
  }

  node(opType: string, inputs: string[], output: string, attrs: Attr[] = []): string {
    const n = this.opTypes.get(opType) ?? 0
    this.opTypes.set(opType, n + 1)
    const w = new ProtoWriter()
    for (const i of inputs) w.string(NodeF.input, i)
    w.string(NodeF.output, output).string(NodeF.name, `${opType}_${n}`).string(NodeF.opType, opType)
    for (const a of attrs) w.message(NodeF.attribute, attribute(a))
    this.nodes.push(w)
    return output
  }

  initializer(name: string, dims: number[], data: Float32Array): string {
    const count = dims.reduce((a, b) => a * b, 1)
    if (data.length !== count) {
      throw new RangeError(`onnx export: ${name} has ${data.length} values, expected ${count} for [${dims.join(', ')}]`)
    }
    this.initializers.push(
      new ProtoWriter().ints(TensorF.dims, dims).int(TensorF.dataType, FLOAT).string(TensorF.name, name).bytes(TensorF.rawData, leBytes(data)),
    )
    return name
  }
}

/** Appends `+ residual` and ReLU nodes after `value` (the fused epilogue, unfused). */
function epilogue(g: GraphBuilder, base: string, value: string, residual: string | undefined, relu: boolean): string {
  let v = value
  if (residual !== undefined) v = g.node('Add', [v, residual], `${base}.add`)
  if (relu) v = g.node('Relu', [v], `${base}.relu`)
  return v
}

function emitOp(g: GraphBuilder, op: Op, i: number, isLast: boolean, output: string): void {
  const base = `op${i}.${op.op}`
  switch (op.op) {
    case 'conv': {
      const w = g.initializer(`${base}.weight`, [op.cout, op.cin / op.groups, op.kh, op.kw], op.weight)
      const b = g.initializer(`${base}.bias`, [op.cout], op.bias)
      const y = g.node('Conv', [g.read(op.x, i), w, b], base, [
        ['kernel_shape', [op.kh, op.kw]],
        ['strides', [op.stride, op.stride]],
        ['pads', [op.pad, op.pad, op.pad, op.pad]],
        ['dilations', [1, 1]],
        ['group', op.groups],
      ])
      const r = op.residual === undefined ? undefined : g.read(op.residual, i)
      g.write(op.y, epilogue(g, base, y, r, op.relu))
      return
    }
    case 'maxpool': {
      const y = g.node('MaxPool', [g.read(op.x, i)], base, [
        ['kernel_shape', [op.k, op.k]],
        ['strides', [op.stride, op.stride]],
        ['pads', [op.pad, op.pad, op.pad, op.pad]],
        ['ceil_mode', op.ceil ? 1 : 0],
      ])
      g.write(op.y, y)
      return
    }
    case 'se': {
      const x = g.read(op.x, i)
      const z = g.node('GlobalAveragePool', [x], `${base}.squeeze`)
      const w1 = g.initializer(`${base}.fc1.weight`, [op.cr, op.c, 1, 1], op.w1)
      const fc1In = op.b1 ? [z, w1, g.initializer(`${base}.fc1.bias`, [op.cr], op.b1)] : [z, w1]
      const h = g.node('Relu', [g.node('Conv', fc1In, `${base}.fc1`, [['kernel_shape', [1, 1]]])], `${base}.fc1.relu`)
      const w2 = g.initializer(`${base}.fc2.weight`, [op.c, op.cr, 1, 1], op.w2)
      const fc2In = op.b2 ? [h, w2, g.initializer(`${base}.fc2.bias`, [op.c], op.b2)] : [h, w2]
      const gate = g.node('Sigmoid', [g.node('Conv', fc2In, `${base}.fc2`, [['kernel_shape', [1, 1]]])], `${base}.gate`)
      const y = g.node('Mul', [x, gate], `${base}.scale`)
      const r = op.residual === undefined ? undefined : g.read(op.residual, i)
      g.write(op.y, epilogue(g, base, y, r, op.relu))
      return
    }
    case 'add': {
      const y = g.node('Add', [g.read(op.a, i), g.read(op.b, i)], base)
      g.write(op.y, op.relu ? g.node('Relu', [y], `${base}.relu`) : y)
      return
    }
    case 'gap':
      g.write(op.y, g.node('GlobalAveragePool', [g.read(op.x, i)], base))
      return
    case 'linear': {
      const flat = g.node('Flatten', [g.read(op.x, i)], `${base}.flatten`, [['axis', 1]])
      const w = g.initializer(`${base}.weight`, [op.cout, op.cin], op.weight)
      const b = g.initializer(`${base}.bias`, [op.cout], op.bias)
      g.write(op.y, g.node('Gemm', [flat, w, b], isLast ? output : base, [['transB', 1]]))
      return
    }
    default:
      throw new TypeError(`onnx export: op ${i} has unknown kind ${JSON.stringify((op as { op: unknown }).op)}`)
  }
}

/** The encoded model as a size and a sequence of byte views (weights by reference). */
export interface OnnxEncoding {
  /** Total length in bytes. */
  readonly size: number
  /** The bytes in order; views onto the program's weight arrays, valid while those are. */
  chunks(): Iterable<Uint8Array>
}

/**
 * Encodes a program as an ONNX ModelProto without copying its weights: the result
 * references the program's arrays. {@link programToOnnx} and {@link programToOnnxFile}
 * are built on it.
 * @throws RangeError if the program is inconsistent (a slot read before written, a
 *   weight of the wrong length) or does not end in a `linear` op writing `output`.
 */
export function encodeOnnx(program: Program, opts: OnnxExportOptions = {}): OnnxEncoding {
  const INPUT = 'input'
  const OUTPUT = 'logits'
  checkOnnxOptions(opts)
  const { ops } = program
  const last = ops[ops.length - 1]
  if (!last || last.op !== 'linear' || last.y !== program.output) {
    throw new RangeError('onnx export: the program must end with the classifier (a linear op writing program.output)')
  }
  const g = new GraphBuilder(INPUT)
  ops.forEach((op, i) => emitOp(g, op, i, i === ops.length - 1, OUTPUT))

  const graph = new ProtoWriter()
  for (const n of g.nodes) graph.message(GraphF.node, n)
  graph.string(GraphF.name, opts.graphName ?? 'senet')
  for (const t of g.initializers) graph.message(GraphF.initializer, t)
  const size = checkInputSize(opts.inputSize)
  const batch = checkBatchSize(opts.batchSize) ?? 'N'
  graph.message(GraphF.input, valueInfo(INPUT, [batch, program.inChannels, size?.[0] ?? 'H', size?.[1] ?? 'W']))
  graph.message(GraphF.output, valueInfo(OUTPUT, [batch, program.numClasses]))

  const model = new ProtoWriter()
    .int(ModelF.irVersion, ONNX_IR_VERSION)
    .string(ModelF.producerName, 'senet')
  if (opts.producerVersion) model.string(ModelF.producerVersion, opts.producerVersion)
  if (opts.docString) model.string(ModelF.docString, opts.docString)
  model.message(ModelF.graph, graph)
  model.message(ModelF.opsetImport, new ProtoWriter().string(OpsetF.domain, '').int(OpsetF.version, ONNX_OPSET))
  return { size: model.size, chunks: () => model.chunks() }
}

/**
 * The program as an ONNX model file's bytes (ModelProto, opset {@link ONNX_OPSET}).
 * Allocates one buffer of the file's size (≈ 4 bytes per parameter) and nothing else
 * of that order.
 */
export function programToOnnx(program: Program, opts: OnnxExportOptions = {}): Uint8Array {
  const enc = encodeOnnx(program, opts)
  const out = new Uint8Array(enc.size)
  let at = 0
  for (const c of enc.chunks()) {
    out.set(c, at)
    at += c.length
  }
  if (at !== enc.size) throw new Error(`onnx export: wrote ${at} bytes, expected ${enc.size} (encoder bug)`)
  return out
}

/**
 * Writes the program as an ONNX file, streaming the weights from the program's arrays
 * (no buffer of the file's size). Small pieces are coalesced into 1 MiB writes.
 */
export async function programToOnnxFile(program: Program, path: string, opts: OnnxExportOptions = {}): Promise<void> {
  const enc = encodeOnnx(program, opts)
  const fh = await fsp.open(path, 'w')
  try {
    const SMALL = 1 << 20
    const buf = new Uint8Array(SMALL)
    let used = 0
    const flush = async (): Promise<void> => {
      if (used > 0) await fh.write(buf, 0, used)
      used = 0
    }
    for (const c of enc.chunks()) {
      if (c.length >= SMALL / 4) {
        await flush()
        await fh.write(c, 0, c.length)
      } else {
        if (used + c.length > SMALL) await flush()
        buf.set(c, used)
        used += c.length
      }
    }
    await flush()
  } finally {
    await fh.close()
  }
}
