/**
 * Whole-model tests: timm reference logits, parameter counts and state_dict names of
 * every named architecture, input validation. One table, run against every backend that
 * loads (pure JS always; native when `lib/index` exports SEResNet).
 *
 * Fixtures come from `tools/reference/models.py` (see tools/reference/README.md).
 */
import test from 'ava'
import { existsSync, readFileSync } from 'fs'
import { join } from 'path'

import { ARCHS, ARCH_NAMES, type Arch, type SEResNetConfig, resolveConfig } from '../lib/model/config'
import { buildProgram, countParams, minInputSize, minInputSizeForConfig, paramSpecs, randomParams } from '../lib/model/build'
import type { ModelBackend } from '../lib/model/program'
import { SEResNet } from '../lib/model/seresnet'
import { writeSafetensors, parseSafetensors } from '../lib/model/safetensors'
import { jsBackend } from '../lib/js/executor'

const FIXTURES = join(__dirname, 'fixtures', 'models')
const LARGE = join(__dirname, '..', 'fixtures-large')

/**
 * Max |Δlogit| against timm. The reference is computed in float64 from the float32
 * weights and inputs, so this bounds our float32 error only: BN folding and a different
 * summation order give relative errors ~1e-6 per layer; the tiny models reach ~5e-7 on
 * logits of O(1) (full-size ones ~1e-5), so 1e-3 leaves a wide margin while still
 * catching any structural mistake (a wrong stride, pad, ReLU or SE width moves logits by
 * ≥ 1e-2).
 */
const TOL = 1e-3

/** Parameter counts: `sum(p.numel() for p in timm.create_model(name).parameters())`, timm 1.0.31. */
const TIMM_NUM_PARAMS: Record<Arch, number> = {
  seresnet18: 11_779_624,
  seresnet34: 21_960_416,
  seresnet50: 28_088_024,
  seresnet101: 49_326_872,
  seresnet152: 66_821_848,
  seresnext50_32x4d: 27_559_896,
  seresnext101_32x4d: 48_955_416,
  legacy_seresnet18: 11_778_592,
  legacy_seresnet34: 21_958_868,
  legacy_seresnet50: 28_088_024,
  legacy_seresnet101: 49_326_872,
  legacy_seresnet152: 66_821_848,
  legacy_seresnext50_32x4d: 27_559_896,
  legacy_seresnext101_32x4d: 48_955_416,
  legacy_senet154: 115_088_984,
  resnet50: 25_557_032,
}

// ------------------------------------------------------------------------- backends

type ModelClass = typeof SEResNet

class JsSEResNet extends SEResNet {
  protected static override readonly backend: ModelBackend = jsBackend
}

const backends: { name: string; SEResNet: ModelClass }[] = [{ name: 'js', SEResNet: JsSEResNet }]
let nativeNote = ''
try {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const native = require('../lib/index') as { SEResNet?: ModelClass }
  if (typeof native.SEResNet === 'function') backends.push({ name: 'native', SEResNet: native.SEResNet })
  else nativeNote = 'lib/index does not export SEResNet yet'
} catch (e) {
  nativeNote = `lib/index does not load: ${(e as Error).message.split('\n')[0]}`
}
if (nativeNote) {
  test('native backend (skipped)', (t) => {
    // CI sets SENET_REQUIRE_NATIVE=1: there a missing addon is a failure, not a skip.
    if (process.env.SENET_REQUIRE_NATIVE === '1') t.fail(`native backend required: ${nativeNote}`)
    t.log(`native model tests skipped: ${nativeNote}`)
    t.pass()
  })
}

// ------------------------------------------------------------------------- fixtures

interface Fixture {
  name: string
  config: SEResNetConfig | Arch
  numParams: number
  minSize: number
  cases: { shape: [number, number, number, number]; seed: number; logits: number[] }[]
}

/** The generator's input: x[i] = fround(sin(0.37 i + 0.11 seed)), float64 then rounded. */
function makeInput(shape: number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1)
  const x = new Float32Array(n)
  for (let i = 0; i < n; i++) x[i] = Math.sin(0.37 * i + 0.11 * seed)
  return x
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return Number.isNaN(d) ? Infinity : d
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T
const TINY = ['tiny_seresnet_basic', 'tiny_seresnet_bottleneck', 'tiny_seresnext', 'tiny_resnet',
  'tiny_legacy_seresnet_basic', 'tiny_legacy_seresnet_bottleneck', 'tiny_legacy_seresnext', 'tiny_legacy_senet154',
  'tiny_se_pre', 'tiny_se_post', 'tiny_se_identity']
const fixtures = TINY.map((n) => readJson<Fixture>(join(FIXTURES, `${n}.json`)))

for (const { name: backend, SEResNet: Model } of backends) {
  for (const fx of fixtures) {
    test(`${backend}: ${fx.name} matches timm`, async (t) => {
      const m = await Model.fromSafetensors(fx.config, join(FIXTURES, `${fx.name}.safetensors`))
      t.is(m.numParams, fx.numParams)
      t.is(m.numClasses, 10)
      t.is(m.backend, backend as 'js' | 'native')
      for (const [i, c] of fx.cases.entries()) {
        const x = makeInput(c.shape, c.seed)
        // forward (async) for one case, forwardSync for the other: both paths covered.
        const y = i === 0 ? await m.forward(x, c.shape as [number, 3, number, number]) : m.forwardSync(x, c.shape)
        t.is(y.length, c.logits.length)
        const d = maxAbsDiff(y, c.logits)
        t.true(d <= TOL, `${c.shape.join('×')}: max |Δlogit| ${d}`)
      }
      m.dispose()
    })
  }
}

test('tiny fixtures: minimum input size equals PyTorch', (t) => {
  for (const fx of fixtures) {
    const config = resolveConfig(fx.config)
    t.is(minInputSizeForConfig(config), fx.minSize, fx.name)
    t.is(minInputSize(buildProgram(config, randomParams(config, 1))), fx.minSize, fx.name)
  }
})

// ------------------------------------------------------------------------- named archs

interface KeysDoc {
  [arch: string]: { numParams: number; minSize: number; keys: [string, number[]][] }
}
const keysDoc = readJson<KeysDoc>(join(FIXTURES, 'keys.json'))

test('ARCHS lists exactly the named architectures', (t) => {
  t.deepEqual([...ARCH_NAMES].sort(), Object.keys(TIMM_NUM_PARAMS).sort())
  t.deepEqual([...ARCH_NAMES].sort(), Object.keys(keysDoc).sort())
})

for (const arch of ARCH_NAMES) {
  test(`${arch}: parameter count, state_dict names/shapes and minimum size equal timm's`, (t) => {
    const config = resolveConfig(arch)
    t.is(countParams(config), TIMM_NUM_PARAMS[arch])
    t.is(keysDoc[arch].numParams, TIMM_NUM_PARAMS[arch])
    // Same names, same shapes, same order as timm's state_dict().
    t.deepEqual(paramSpecs(config).map((p) => [p.name, p.shape]), keysDoc[arch].keys)
    t.is(minInputSizeForConfig(config), keysDoc[arch].minSize)
  })
}

for (const { name: backend, SEResNet: Model } of backends) {
  test(`${backend}: create() gives finite O(1..10) logits; sizes at the PyTorch limit`, (t) => {
    for (const arch of ['seresnet50', 'legacy_seresnet50'] as const) {
      const m = Model.create(arch, { seed: 3, numClasses: 20 })
      t.is(m.arch, arch)
      t.is(m.numClasses, 20)
      const min = keysDoc[arch].minSize
      t.is(m.minInputSize, min)
      const y = m.forwardSync(makeInput([1, 3, 32, 32], 5), [1, 3, 32, 32])
      t.is(y.length, 20)
      const big = Math.max(...Array.from(y, Math.abs))
      t.true(y.every(Number.isFinite) && big > 0.05 && big < 50, `${arch}: max |logit| ${big}`)
      t.is(m.forwardSync(makeInput([1, 3, min, min + 30], 1), [1, 3, min, min + 30]).length, 20)
      if (min > 1) {
        t.throws(() => m.forwardSync(new Float32Array(3 * (min - 1) * 31), [1, 3, min - 1, 31]), { instanceOf: RangeError, message: /too small.*at least/ })
      }
      // PyTorch's exact limit: 1×1 for timm's stem, 3×3 for Cadene's (ceil-mode pool, no padding).
      t.is(m.forwardSync(makeInput([2, 3, min, min], 1), [2, 3, min, min]).length, 40)
      t.is(m.forwardSync(makeInput([1, 3, 31, 31], 1), [1, 3, 31, 31]).length, 20)
      m.dispose()
    }
  })
}

// ------------------------------------------------------------------------- bad inputs

const BASIC = fixtures.find((f) => f.name === 'tiny_legacy_seresnet_basic') as Fixture
const TIMM_BASIC = fixtures.find((f) => f.name === 'tiny_seresnet_basic') as Fixture
const basicPath = join(FIXTURES, `${BASIC.name}.safetensors`)

for (const { name: backend, SEResNet: Model } of backends) {
  test(`${backend}: invalid inputs are rejected and leave the model usable`, async (t) => {
    const m = await Model.fromSafetensors(BASIC.config, basicPath)
    const c = BASIC.cases[0]
    const x = makeInput(c.shape, c.seed)
    const bad: [unknown, unknown, RegExp, typeof TypeError | typeof RangeError][] = [
      [new Float64Array(x), c.shape, /x must be a Float32Array, got Float64Array/, TypeError],
      [Array.from(x), c.shape, /x must be a Float32Array, got Array/, TypeError],
      [x, [1, 3, 224], /shape must be \[n, c, h, w\]/, TypeError],
      [x, 'x', /shape must be/, TypeError],
      [x, [0, 3, 224, 224], /shape\[0\] \(n\) must be a positive safe integer, got 0/, RangeError],
      [x, [1, 3, -224, 224], /shape\[2\] \(h\).*got -224/, RangeError],
      [x, [1, 3, 224, 22.5], /shape\[3\] \(w\).*got 22.5/, RangeError],
      [x, [1, 3, NaN, 224], /shape\[2\]/, RangeError],
      [x, [1, 4, 224, 224], /shape\[1\] \(channels\) must be 3, got 4/, RangeError],
      [x, [2, 3, 224, 224], /x.length must be .* = 301056, got 150528/, RangeError],
      [x.subarray(1), [1, 3, 224, 224], /got 150527/, RangeError],
      [new Float32Array(3 * 2 * 2), [1, 3, 2, 2], /input 2×2 is too small for custom: height and width must be at least 3/, RangeError],
      [new Float32Array(3 * 100 * 1), [1, 3, 100, 1], /too small/, RangeError],
    ]
    for (const [bx, bs, message, instanceOf] of bad) {
      t.throws(() => m.forwardSync(bx as Float32Array, bs as [number, number, number, number]), { instanceOf, message })
      await t.throwsAsync(() => m.forward(bx as Float32Array, bs as [number, 3, number, number]), { instanceOf, message })
    }
    // Still usable, still right.
    t.true(maxAbsDiff(m.forwardSync(x, c.shape), c.logits) <= TOL)
    t.is(m.forwardSync(new Float32Array(3 * 3 * 3), [1, 3, 3, 3]).length, 10)
    m.dispose()
    m.dispose() // idempotent
    t.true(m.disposed)
    t.throws(() => m.forwardSync(x, c.shape), { instanceOf: Error, message: /forwardSync: the model was disposed/ })
    await t.throwsAsync(() => m.forward(x, c.shape as [number, 3, number, number]), { message: /forward: the model was disposed/ })
  })

  test(`${backend}: bad architectures, options and weight files`, async (t) => {
    t.throws(() => Model.create('seresnet51' as Arch), {
      instanceOf: TypeError,
      message: /unknown architecture "seresnet51"; expected one of seresnet18, .*legacy_senet154, resnet50/,
    })
    await t.throwsAsync(() => Model.fromSafetensors('nope' as Arch, basicPath), { instanceOf: TypeError, message: /unknown architecture/ })
    t.throws(() => Model.create({ ...ARCHS.seresnet18, layers: [2, 2, 0, 2] }), { instanceOf: RangeError, message: /config.layers\[2\]/ })
    t.throws(() => Model.create({ ...ARCHS.seresnet18, se: 'middle' as 'pre' }), { instanceOf: TypeError, message: /config.se: expected one of/ })
    t.throws(() => Model.create({ ...ARCHS.seresnet18, inChans: 1 as 3 }), { instanceOf: RangeError, message: /inChans/ })
    t.throws(() => Model.create('seresnet18', { numClasses: 0 }), { instanceOf: RangeError, message: /opts.numClasses must be a positive integer, got 0/ })
    t.throws(() => Model.create('seresnet18', { seed: 1.5 }), { instanceOf: RangeError, message: /opts.seed/ })
    // A misspelt option is refused, not ignored; opts must be a plain object.
    t.throws(() => Model.create('seresnet18', { sed: 1 } as unknown as { seed: number }), {
      instanceOf: TypeError,
      message: /^SEResNet\.create: opts\.sed is not an option \(known: numClasses, seed\)$/,
    })
    t.throws(() => Model.create('seresnet18', [] as unknown as { seed: number }), { instanceOf: TypeError, message: /SEResNet\.create: opts must be an object, got an array/ })
    t.throws(() => Model.create('seresnet18', null as unknown as { seed: number }), { instanceOf: TypeError, message: /opts must be an object, got null/ })
    await t.throwsAsync(() => Model.fromSafetensors(BASIC.config, basicPath, { seed: 1 } as unknown as { numClasses: number }), {
      instanceOf: TypeError,
      message: /^SEResNet\.fromSafetensors: opts\.seed is not an option \(known: numClasses\)$/,
    })
    await t.throwsAsync(() => Model.fromSafetensors(BASIC.config, 42 as unknown as string), { instanceOf: TypeError, message: /source must be a file path/ })

    // A legacy_ file given to the timm layout: every name differs.
    await t.throwsAsync(() => Model.fromSafetensors(TIMM_BASIC.config, basicPath), {
      instanceOf: RangeError,
      message: /^weights do not match custom config: missing \d+ \(conv1\.weight, .*… and \d+ more\), unexpected \d+ \(last_linear\.bias, /,
    })
    // numClasses given and contradicted by the file.
    await t.throwsAsync(() => Model.fromSafetensors(BASIC.config, basicPath, { numClasses: 5 }), {
      instanceOf: RangeError,
      message: /mis-shaped 2 \(last_linear\.weight: expected \[5,64\], got \[10,64\], last_linear\.bias: expected \[5\], got \[10\]\)/,
    })
    // Another architecture's file, as bytes; and a file with one tensor missing, one extra, one mis-shaped.
    const cfg = resolveConfig(BASIC.config)
    const params = randomParams(cfg, 1)
    const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {}
    for (const p of paramSpecs(cfg)) {
      if (p.name.endsWith('num_batches_tracked')) continue
      tensors[p.name] = { dtype: 'F32', shape: p.shape, data: params.get(p.name) as Float32Array }
    }
    delete tensors['layer1.0.bn1.running_var']
    tensors['layer9.extra'] = { dtype: 'F32', shape: [1], data: new Float32Array(1) }
    tensors['layer1.0.se_module.fc1.weight'] = { dtype: 'F32', shape: [2, 16, 1, 1], data: new Float32Array(32) }
    const bytes = writeSafetensors(tensors)
    await t.throwsAsync(() => Model.fromSafetensors(BASIC.config, bytes), {
      instanceOf: RangeError,
      message: 'weights do not match custom config: missing 1 (layer1.0.bn1.running_var), unexpected 1 (layer9.extra), ' +
        'mis-shaped 1 (layer1.0.se_module.fc1.weight: expected [1,16,1,1], got [2,16,1,1])',
    })
    await t.throwsAsync(() => Model.fromSafetensors('legacy_seresnet18', bytes), { instanceOf: RangeError, message: /^weights do not match legacy_seresnet18: missing/ })
    t.truthy(parseSafetensors(bytes))
  })
}

// ------------------------------------------------------------------------- full size

const LARGE_ARCHS = ['seresnet50', 'resnet50', 'legacy_seresnet50', 'seresnext50_32x4d'] as const
for (const { name: backend, SEResNet: Model } of backends) {
  for (const arch of LARGE_ARCHS) {
    const json = join(LARGE, `${arch}.json`)
    if (!existsSync(json)) {
      test(`${backend}: full-size ${arch} (skipped)`, (t) => {
        t.log(`no ${json}: run /usr/bin/python3 tools/reference/models.py --full to enable`)
        t.pass()
      })
      continue
    }
    test(`${backend}: full-size ${arch} matches timm`, async (t) => {
      const fx = readJson<Fixture>(json)
      const m = await Model.fromSafetensors(arch, join(LARGE, `${arch}.safetensors`))
      t.is(m.numParams, TIMM_NUM_PARAMS[arch])
      t.is(m.numClasses, 1000)
      for (const c of fx.cases) {
        const d = maxAbsDiff(await m.forward(makeInput(c.shape, c.seed), c.shape as [number, 3, number, number]), c.logits)
        t.log(`${arch} ${c.shape.join('×')}: max |Δlogit| ${d.toExponential(2)} (tolerance ${TOL})`)
        t.true(d <= TOL, `${arch} ${c.shape.join('×')}: max |Δlogit| ${d}`)
      }
      m.dispose()
    })
  }
}

// A model kept across `setSimdLevel` switches: its convolutions re-derive their weight
// packings for the new level's kernels (a scalar forward after an AVX-512 one once read
// AVX-512's 4-block packing as single blocks and returned wrong logits).
test.serial('native: forward stays correct across setSimdLevel switches', async (t) => {
  const native = backends.find((b) => b.name === 'native')
  if (!native) return t.pass()
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const api = require('../lib/index') as { setSimdLevel(l: string): void; simdLevel(): string; supportedSimdLevels(): string[] }
  const fx = fixtures.find((f) => f.name === 'tiny_seresnet_bottleneck') as Fixture
  const m = await native.SEResNet.fromSafetensors(fx.config, join(FIXTURES, `${fx.name}.safetensors`))
  const before = api.simdLevel()
  const levels = api.supportedSimdLevels()
  try {
    for (const order of [[...levels].reverse(), levels, [...levels].reverse()]) {
      for (const level of order) {
        api.setSimdLevel(level)
        for (const c of fx.cases) {
          const d = maxAbsDiff(m.forwardSync(makeInput(c.shape, c.seed), c.shape), c.logits)
          t.true(d <= TOL, `${level}, ${c.shape.join('×')}: max |Δlogit| ${d}`)
        }
      }
    }
  } finally {
    api.setSimdLevel(before)
    m.dispose()
  }
})
