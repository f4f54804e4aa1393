/**
 * ONNX export (`lib/model/onnx.ts`, `SEResNet.toOnnx`): every tiny fixture model of every
 * family is exported, run in onnxruntime-node and compared with senet's own logits; the
 * graph is decoded with the independent `onnx-proto` schema and its structure checked
 * against the program it came from.
 *
 * onnxruntime-node is a devDependency with a prebuilt binary; where it cannot load (an
 * unsupported platform) the runtime comparisons are skipped with a note, except under CI
 * (`CI` set), where that is a failure.
 */
import test from 'ava'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { onnx } from 'onnx-proto'

import { type Arch, type SEResNetConfig, resolveConfig } from '../lib/model/config'
import { buildProgram, randomParams } from '../lib/model/build'
import { ONNX_IR_VERSION, ONNX_OPSET, programToOnnx } from '../lib/model/onnx'
import type { ModelBackend, Program } from '../lib/model/program'
import { SEResNet } from '../lib/model/seresnet'
import { jsBackend } from '../lib/js/executor'

const FIXTURES = join(__dirname, 'fixtures', 'models')
/** ONNX runtime vs senet, same float32 weights: only summation order differs. */
const TOL = 1e-4

// ------------------------------------------------------------------------- engines

type Ort = typeof import('onnxruntime-node')
let ort: Ort | undefined
let ortNote = ''
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  ort = require('onnxruntime-node') as Ort
} catch (e) {
  ortNote = `onnxruntime-node does not load: ${(e as Error).message.split('\n')[0]}`
}

type ModelClass = typeof SEResNet
class JsSEResNet extends SEResNet {
  protected static override readonly backend: ModelBackend = jsBackend
}
/** The native backend when the addon loads (what users run), else pure JS. */
let Model: ModelClass = JsSEResNet
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const native = require('../lib/index') as { SEResNet?: ModelClass }
  if (typeof native.SEResNet === 'function') Model = native.SEResNet
} catch {
  // models.spec.ts reports a missing addon; here the JS backend is as good a reference.
}

/** Runs a test body that needs onnxruntime, or skips it (failing under CI). */
function withOrt(title: string, body: (t: import('ava').ExecutionContext, ort: Ort) => Promise<void>): void {
  test(title, async (t) => {
    if (!ort) {
      if (process.env.CI) t.fail(`onnxruntime-node is required under CI: ${ortNote}`)
      else t.log(`skipped: ${ortNote}`)
      t.pass()
      return
    }
    await body(t, ort)
  })
}

// ------------------------------------------------------------------------- helpers

interface Fixture {
  name: string
  config: SEResNetConfig | Arch
  cases: { shape: [number, number, number, number]; seed: number; logits: number[] }[]
}

const TINY = ['tiny_seresnet_basic', 'tiny_seresnet_bottleneck', 'tiny_seresnext', 'tiny_resnet',
  'tiny_legacy_seresnet_basic', 'tiny_legacy_seresnet_bottleneck', 'tiny_legacy_seresnext', 'tiny_legacy_senet154',
  'tiny_se_pre', 'tiny_se_post', 'tiny_se_identity']
const fixtures = TINY.map((n) => JSON.parse(readFileSync(join(FIXTURES, `${n}.json`), 'utf8')) as Fixture)

function makeInput(shape: number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1)
  const x = new Float32Array(n)
  for (let i = 0; i < n; i++) x[i] = Math.sin(0.37 * i + 0.11 * seed)
  return x
}

/** Byte equality (ava's deepEqual enumerates every element: too slow and too deep for MBs). */
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = a.length === b.length ? 0 : Infinity
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return Number.isNaN(d) ? Infinity : d
}

async function runOrt(ort: Ort, bytes: Uint8Array, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 })
  try {
    const out = await session.run({ input: new ort.Tensor('float32', x, shape) })
    return out.logits.data as Float32Array
  } finally {
    await session.release()
  }
}

/** Node counts per op type the exporter must emit for `program` (see the table in onnx.ts). */
function expectedNodes(p: Program): Map<string, number> {
  const m = new Map<string, number>()
  const add = (k: string, n = 1): void => {
    if (n > 0) m.set(k, (m.get(k) ?? 0) + n)
  }
  for (const op of p.ops) {
    switch (op.op) {
      case 'conv':
        add('Conv')
        add('Add', op.residual === undefined ? 0 : 1)
        add('Relu', op.relu ? 1 : 0)
        break
      case 'maxpool':
        add('MaxPool')
        break
      case 'se':
        add('GlobalAveragePool')
        add('Conv', 2)
        add('Relu', 1 + (op.relu ? 1 : 0))
        add('Sigmoid')
        add('Mul')
        add('Add', op.residual === undefined ? 0 : 1)
        break
      case 'add':
        add('Add')
        add('Relu', op.relu ? 1 : 0)
        break
      case 'gap':
        add('GlobalAveragePool')
        break
      case 'linear':
        add('Flatten')
        add('Gemm')
        break
    }
  }
  return m
}

function expectedInitializers(p: Program): number {
  let n = 0
  for (const op of p.ops) {
    if (op.op === 'conv' || op.op === 'linear') n += 2
    else if (op.op === 'se') n += 2 + (op.b1 ? 1 : 0) + (op.b2 ? 1 : 0)
  }
  return n
}

const dims = (v: onnx.IValueInfoProto | undefined): (number | string)[] =>
  (v?.type?.tensorType?.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)))

// ------------------------------------------------------------------------- tests

for (const fx of fixtures) {
  withOrt(`${fx.name}: onnxruntime runs the export and matches senet (≤ ${TOL}) and timm`, async (t, ort) => {
    const m = await Model.fromSafetensors(fx.config, join(FIXTURES, `${fx.name}.safetensors`))
    const bytes = m.toOnnx()
    for (const c of fx.cases) {
      const x = makeInput(c.shape, c.seed)
      const want = m.forwardSync(x, c.shape)
      const got = await runOrt(ort, bytes, x, c.shape)
      t.true(maxAbsDiff(got, want) <= TOL, `${c.shape.join('×')}: onnxruntime vs senet max |Δlogit| ${maxAbsDiff(got, want)}`)
      t.true(maxAbsDiff(got, c.logits) <= 1e-3, `${c.shape.join('×')}: onnxruntime vs timm max |Δlogit| ${maxAbsDiff(got, c.logits)}`)
    }
    m.dispose()
  })

  test(`${fx.name}: exported graph structure`, async (t) => {
    const config = resolveConfig(fx.config)
    const program = buildProgram({ ...config, numClasses: 10 }, randomParams({ ...config, numClasses: 10 }, 3))
    const model = onnx.ModelProto.decode(programToOnnx(program, { graphName: fx.name }))
    t.is(Number(model.irVersion), ONNX_IR_VERSION)
    t.deepEqual(model.opsetImport.map((o) => [o.domain ?? '', Number(o.version)]), [['', ONNX_OPSET]])
    const g = model.graph as onnx.GraphProto
    t.is(g.name, fx.name)
    t.deepEqual(g.input.map((v) => v.name), ['input'])
    t.deepEqual(dims(g.input[0]), ['N', 3, 'H', 'W'])
    t.deepEqual(g.output.map((v) => v.name), ['logits'])
    t.deepEqual(dims(g.output[0]), ['N', 10])

    const counts = new Map<string, number>()
    for (const n of g.node) counts.set(n.opType, (counts.get(n.opType) ?? 0) + 1)
    t.deepEqual(Object.fromEntries([...counts].sort()), Object.fromEntries([...expectedNodes(program)].sort()))
    if (config.se !== 'none') for (const op of ['GlobalAveragePool', 'Sigmoid', 'Mul']) t.true(counts.has(op), op)

    // Initializers: count, float32, raw_data of exactly the dims' size; every one used.
    t.is(g.initializer.length, expectedInitializers(program))
    let params = 0
    for (const init of g.initializer) {
      const n = init.dims.reduce((a: number, d) => a * Number(d), 1)
      t.is(init.dataType, onnx.TensorProto.DataType.FLOAT, init.name)
      t.is(init.rawData.length, 4 * n, init.name)
      params += n
    }
    const programParams = program.ops.reduce((s, op) =>
      s + (op.op === 'conv' || op.op === 'linear' ? op.weight.length + op.bias.length
        : op.op === 'se' ? op.w1.length + op.w2.length + (op.b1?.length ?? 0) + (op.b2?.length ?? 0) : 0), 0)
    t.is(params, programParams)

    // Topological order, every input defined, unique node and value names.
    const defined = new Set<string>(['input', ...g.initializer.map((i) => i.name)])
    const used = new Set<string>()
    for (const n of g.node) {
      for (const i of n.input) {
        t.true(defined.has(i), `${n.name} reads ${i} before it is defined`)
        used.add(i)
      }
      for (const o of n.output) {
        t.false(defined.has(o), `${o} defined twice`)
        defined.add(o)
      }
    }
    t.is(new Set(g.node.map((n) => n.name)).size, g.node.length)
    t.true(defined.has('logits'))
    for (const i of g.initializer) t.true(used.has(i.name), `initializer ${i.name} unused`)
  })
}

test('toOnnx: the same bytes from a path, from bytes, and streamed to a file', async (t) => {
  const file = join(FIXTURES, 'tiny_seresnext.safetensors')
  const config = fixtures.find((f) => f.name === 'tiny_seresnext')?.config as SEResNetConfig
  const a = await Model.fromSafetensors(config, file)
  const b = await Model.fromSafetensors(config, new Uint8Array(readFileSync(file)))
  const fromPath = a.toOnnx()
  t.true(sameBytes(b.toOnnx(), fromPath), 'from bytes')
  t.true(sameBytes(a.toOnnx(), fromPath), 'deterministic')
  const dir = mkdtempSync(join(tmpdir(), 'senet-onnx-'))
  try {
    const out = join(dir, 'm.onnx')
    await a.toOnnxFile(out)
    t.true(sameBytes(readFileSync(out), fromPath), 'toOnnxFile')
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  a.dispose()
  b.dispose()
  t.throws(() => a.toOnnx(), { message: /disposed/ })
})

test('toOnnx: a created model re-derives its random weights from the seed', (t) => {
  const m1 = Model.create('seresnet18', { seed: 5, numClasses: 7 })
  const m2 = Model.create('seresnet18', { seed: 5, numClasses: 7 })
  const m3 = Model.create('seresnet18', { seed: 6, numClasses: 7 })
  const x = m1.toOnnx()
  t.true(sameBytes(m2.toOnnx(), x))
  t.false(sameBytes(m3.toOnnx(), x))
  // ≈ 4 bytes per parameter (BN folded away: the conv biases replace γ, β; μ, σ² are gone).
  t.true(x.length > 4 * m1.numParams * 0.99 && x.length < 4 * m1.numParams * 1.01, `${x.length} bytes for ${m1.numParams} params`)
  for (const m of [m1, m2, m3]) m.dispose()
})

withOrt('toOnnx: a created model runs in onnxruntime at several batch sizes and input sizes', async (t, ort) => {
  const m = Model.create('legacy_seresnet18', { seed: 2, numClasses: 5 })
  const bytes = m.toOnnx()
  for (const shape of [[1, 3, 64, 64], [3, 3, 57, 71]] as [number, number, number, number][]) {
    const x = makeInput(shape, 4)
    const d = maxAbsDiff(await runOrt(ort, bytes, x, shape), m.forwardSync(x, shape))
    t.true(d <= TOL, `${shape.join('×')}: max |Δlogit| ${d}`)
  }
  m.dispose()
})

withOrt('toOnnx: inputSize fixes the input height and width', async (t, ort) => {
  const m = Model.create('legacy_seresnet18', { seed: 2, numClasses: 5 })
  const bytes = m.toOnnx({ inputSize: [64, 71] })
  const g = onnx.ModelProto.decode(bytes).graph as onnx.GraphProto
  t.deepEqual(dims(g.input[0]), ['N', 3, 64, 71])
  t.deepEqual(dims(g.output[0]), ['N', 5])
  for (const n of [1, 3]) {
    const shape: [number, number, number, number] = [n, 3, 64, 71]
    const x = makeInput(shape, 6)
    const d = maxAbsDiff(await runOrt(ort, bytes, x, shape), m.forwardSync(x, shape))
    t.true(d <= TOL, `batch ${n}: max |Δlogit| ${d}`)
  }
  // onnxruntime refuses another size for the fixed graph.
  const other = [1, 3, 64, 64]
  await t.throwsAsync(runOrt(ort, bytes, makeInput(other, 1), other))
  m.dispose()
})

withOrt('toOnnx: batchSize fixes the batch of the input and the logits', async (t, ort) => {
  const m = Model.create('legacy_seresnet18', { seed: 3, numClasses: 5 })
  const bytes = m.toOnnx({ inputSize: [40, 48], batchSize: 2 })
  const g = onnx.ModelProto.decode(bytes).graph as onnx.GraphProto
  t.deepEqual(dims(g.input[0]), [2, 3, 40, 48])
  t.deepEqual(dims(g.output[0]), [2, 5])
  t.deepEqual(dims(onnx.ModelProto.decode(m.toOnnx({ batchSize: 1 })).graph!.input[0]), [1, 3, 'H', 'W'])
  const shape: [number, number, number, number] = [2, 3, 40, 48]
  const x = makeInput(shape, 8)
  const d = maxAbsDiff(await runOrt(ort, bytes, x, shape), m.forwardSync(x, shape))
  t.true(d <= TOL, `max |Δlogit| ${d}`)
  // The same weights and nodes as the symbolic-batch graph: only the two batch dims differ.
  const sym = onnx.ModelProto.decode(m.toOnnx({ inputSize: [40, 48] })).graph as onnx.GraphProto
  t.is(g.node.length, sym.node.length)
  t.is(g.initializer.length, sym.initializer.length)
  // onnxruntime refuses another batch for the fixed graph.
  const other = [1, 3, 40, 48]
  await t.throwsAsync(runOrt(ort, bytes, makeInput(other, 1), other))
  m.dispose()
})

test('toOnnx: bad batchSize, names and unknown options are TypeError / RangeError naming them, before any file is written', async (t) => {
  const m = Model.create('legacy_seresnet18', { seed: 1, numClasses: 4 })
  const bad: [unknown, ErrorConstructor, RegExp][] = [
    [{ batchSize: 0 }, RangeError, /SEResNet\.toOnnx: opts\.batchSize must be a positive integer, got 0/],
    [{ batchSize: 2.5 }, RangeError, /opts\.batchSize must be a positive integer, got 2\.5/],
    [{ batchSize: -1 }, RangeError, /opts\.batchSize must be a positive integer, got -1/],
    [{ batchSize: 2 ** 53 }, RangeError, /opts\.batchSize must be a positive integer/],
    [{ batchSize: '8' }, TypeError, /opts\.batchSize must be a number, got "8"/],
    [{ graphName: 5 }, TypeError, /opts\.graphName must be a string, got 5/],
    [{ docString: null }, TypeError, /opts\.docString must be a string, got null/],
    [{ producerVersion: ['1'] }, TypeError, /opts\.producerVersion must be a string, got an array/],
    [{ batchsize: 8 }, TypeError, /opts\.batchsize is not an export option \(known: graphName, docString, producerVersion, inputSize, batchSize\)/],
    [[], TypeError, /SEResNet\.toOnnx: opts must be an object or undefined, got an array/],
    [null, TypeError, /opts must be an object or undefined, got null/],
    [7, TypeError, /opts must be an object or undefined, got number/],
  ]
  const dir = mkdtempSync(join(tmpdir(), 'senet-onnx-'))
  try {
    const out = join(dir, 'm.onnx')
    for (const [opts, E, message] of bad) {
      const o = opts as Parameters<typeof m.toOnnx>[0]
      const e = t.throws(() => m.toOnnx(o), { message })
      t.true(e instanceof E, `${JSON.stringify(opts)}: ${e?.constructor.name}`)
      await t.throwsAsync(m.toOnnxFile(out, o), { message: new RegExp(message.source.replace('toOnnx', 'toOnnxFile')) })
      t.throws(() => readFileSync(out), { code: 'ENOENT' }, 'no file written')
    }
    // The program-level exporter checks them too.
    const program = buildProgram(resolveConfig({ ...(fixtures[0].config as SEResNetConfig) }), randomParams(resolveConfig(fixtures[0].config as SEResNetConfig), 1))
    t.throws(() => programToOnnx(program, { batchSize: 0 }), { instanceOf: RangeError, message: /^onnx export: opts\.batchSize must be a positive integer, got 0$/ })
    t.throws(() => programToOnnx(program, { batch: 1 } as unknown as { batchSize: number }), { instanceOf: TypeError, message: /^onnx export: opts\.batch is not an export option/ })
    t.notThrows(() => m.toOnnx({ batchSize: 1, graphName: 'g', docString: '', producerVersion: '1' }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
    m.dispose()
  }
})

test('toOnnx: a bad inputSize is a TypeError / RangeError naming it, before any file is written', async (t) => {
  // Cadene's architectures need at least 3×3 inputs (ceil-mode pooling without padding).
  const m = Model.create('legacy_seresnet18', { seed: 1, numClasses: 4 })
  t.is(m.minInputSize, 3)
  const bad: [unknown, ErrorConstructor, RegExp][] = [
    ['224', TypeError, /SEResNet\.toOnnx: opts\.inputSize must be \[height, width\], got "224"/],
    [[224], TypeError, /opts\.inputSize must be \[height, width\], got \[224\]/],
    [[224, 224, 3], TypeError, /opts\.inputSize must be \[height, width\]/],
    [[224, 0], RangeError, /opts\.inputSize\[1\] \(width\) must be a positive integer, got 0/],
    [[22.5, 224], RangeError, /opts\.inputSize\[0\] \(height\) must be a positive integer, got 22\.5/],
    [['224', 224], RangeError, /opts\.inputSize\[0\] \(height\) must be a positive integer, got "224"/],
    [[m.minInputSize - 1, 224], RangeError, new RegExp(`inputSize ${m.minInputSize - 1}×224 is too small for legacy_seresnet18: height and width must be at least ${m.minInputSize}`)],
  ]
  const dir = mkdtempSync(join(tmpdir(), 'senet-onnx-'))
  try {
    const out = join(dir, 'm.onnx')
    for (const [inputSize, E, message] of bad) {
      const opts = { inputSize } as unknown as Parameters<typeof m.toOnnx>[0]
      const e = t.throws(() => m.toOnnx(opts), { message })
      t.true(e instanceof E, `${JSON.stringify(inputSize)}: ${e?.constructor.name}`)
      await t.throwsAsync(m.toOnnxFile(out, opts), { message: new RegExp(message.source.replace('toOnnx', 'toOnnxFile')) })
      t.throws(() => readFileSync(out), { code: 'ENOENT' }, 'no file written')
    }
    // The program-level exporter checks the option too.
    const program = buildProgram(resolveConfig({ ...(fixtures[0].config as SEResNetConfig) }), randomParams(resolveConfig(fixtures[0].config as SEResNetConfig), 1))
    t.throws(() => programToOnnx(program, { inputSize: [0, 5] }), { instanceOf: RangeError, message: /onnx export: opts\.inputSize\[0\] \(height\)/ })
    t.notThrows(() => m.toOnnx({ inputSize: [m.minInputSize, m.minInputSize] }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
    m.dispose()
  }
})

test('toOnnx: refuses a weights file changed since loading', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'senet-onnx-'))
  try {
    const file = join(dir, 'w.safetensors')
    copyFileSync(join(FIXTURES, 'tiny_seresnet_basic.safetensors'), file)
    const config = fixtures.find((f) => f.name === 'tiny_seresnet_basic')?.config as SEResNetConfig
    const m = await Model.fromSafetensors(config, file)
    t.notThrows(() => m.toOnnx())
    writeFileSync(file, Buffer.concat([readFileSync(file), Buffer.alloc(8)]))
    t.throws(() => m.toOnnx(), { message: /changed since the model was loaded/ })
    rmSync(file)
    t.throws(() => m.toOnnx(), { message: /cannot re-read/ })
    m.dispose()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
