/**
 * Model runtime behaviour beyond single forwards: the two backends agree on every test
 * model, concurrent forwards on one model are correct, memory stays bounded.
 */
import test from 'ava'
import { execFileSync } from 'child_process'
import { readFileSync } from 'fs'
import { join } from 'path'

import * as js from '../lib/js/index'
import type { SEResNetConfig } from '../lib/model/config'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const native = require('../lib/index') as typeof import('../lib/index')

const FIXTURES = join(__dirname, 'fixtures', 'models')
const NAMES = ['tiny_seresnet_basic', 'tiny_seresnet_bottleneck', 'tiny_seresnext', 'tiny_resnet',
  'tiny_legacy_seresnet_basic', 'tiny_legacy_seresnet_bottleneck', 'tiny_legacy_seresnext', 'tiny_legacy_senet154',
  'tiny_se_pre', 'tiny_se_post', 'tiny_se_identity']

function input(shape: number[], seed: number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1)
  return new Float32Array(n).map((_, i) => Math.sin(0.37 * i + 0.11 * seed))
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return Number.isNaN(d) ? Infinity : d
}

/**
 * Native vs pure JS. Each backend is within ~1e-6 of timm on these models (models.spec);
 * they differ from each other by their float32 summation orders only, so 1e-4 on logits
 * of O(1-10) is a wide margin that still catches any difference in semantics.
 */
const AGREE = 1e-4

for (const name of NAMES) {
  test(`native and pure JS agree on ${name}`, async (t) => {
    const fx = JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as { config: SEResNetConfig }
    const file = join(FIXTURES, `${name}.safetensors`)
    const [a, b] = await Promise.all([
      native.SEResNet.fromSafetensors(fx.config, file),
      js.SEResNet.fromSafetensors(fx.config, file),
    ])
    for (const shape of [[1, 3, 224, 224], [2, 3, 193, 161], [3, 3, 64, 96]] as [number, number, number, number][]) {
      const x = input(shape, 5)
      const d = maxAbsDiff(a.forwardSync(x, shape), b.forwardSync(x, shape))
      t.true(d <= AGREE, `${shape}: max |Δlogit| ${d}`)
    }
    a.dispose()
    b.dispose()
  })
}

test('16 concurrent native forwards on one model equal sequential ones, mixed shapes', async (t) => {
  const fx = JSON.parse(readFileSync(join(FIXTURES, 'tiny_seresnext.json'), 'utf8')) as { config: SEResNetConfig }
  const model = await native.SEResNet.fromSafetensors(fx.config, join(FIXTURES, 'tiny_seresnext.safetensors'))
  const shapes: [number, number, number, number][] = [[1, 3, 224, 224], [2, 3, 97, 131], [4, 3, 64, 64], [1, 3, 33, 47]]
  const jobs = Array.from({ length: 16 }, (_, i) => ({ shape: shapes[i % 4], x: input(shapes[i % 4], i) }))
  const want = jobs.map((j) => model.forwardSync(j.x, j.shape))
  const got = await Promise.all(jobs.map((j) => model.forward(j.x, j.shape)))
  got.forEach((g, i) => t.deepEqual(g, want[i], `job ${i}`))
  // A rejected call in the middle of the stream does not disturb the others.
  const mixed = await Promise.allSettled([model.forward(jobs[0].x, jobs[0].shape), model.forward(jobs[0].x, [1, 3, 2, 2]), model.forward(jobs[1].x, jobs[1].shape)])
  t.is(mixed[1].status, 'rejected')
  t.deepEqual((mixed[0] as PromiseFulfilledResult<Float32Array>).value, want[0])
  t.deepEqual((mixed[2] as PromiseFulfilledResult<Float32Array>).value, want[1])
  model.dispose()
})

test('queued native forwards of one size run coalesced into batches; each caller gets exactly its own results', async (t) => {
  // The queue runs the head request together with the queued ones of its image size, up
  // to 8 images (SENET_COALESCE). While the first call runs, the other 23 wait: calls of
  // 1-3 images at 64×80 (batches of ≤ 8 images, one call of 9 alone) interleaved with
  // 48×48 ones. Every result must equal the call run alone, bit for bit (an image's
  // logits do not depend on the batch it runs in), in each caller's own image order.
  const model = native.SEResNet.create('seresnet18', { seed: 7, numClasses: 10 })
  const sizes = [1, 2, 1, 3, 1, 9, 2, 1, 1, 2, 3, 1, 1, 2, 1, 1, 3, 1, 2, 1, 1, 1, 2, 1]
  const jobs = sizes.map((n, i) => {
    const shape: [number, number, number, number] = i % 3 === 2 ? [n, 3, 48, 48] : [n, 3, 64, 80]
    return { shape, x: input(shape, 100 + i) }
  })
  const want = jobs.map((j) => model.forwardSync(j.x, j.shape))
  const got = await Promise.all(jobs.map((j) => model.forward(j.x, j.shape)))
  got.forEach((g, i) => {
    t.is(g.length, jobs[i].shape[0] * 10, `job ${i} length`)
    t.deepEqual(g, want[i], `job ${i}`)
  })
  // A call that fails validation is rejected at once and never joins a batch.
  const mixed = await Promise.allSettled([model.forward(jobs[0].x, jobs[0].shape), model.forward(jobs[1].x, [2, 3, 64, 81]), model.forward(jobs[1].x, jobs[1].shape)])
  t.deepEqual(mixed.map((m) => m.status), ['fulfilled', 'rejected', 'fulfilled'])
  t.deepEqual((mixed[2] as PromiseFulfilledResult<Float32Array>).value, want[1])
  model.dispose()
})

test('dispose() with forwards pending: they finish, later calls fail clearly', async (t) => {
  const model = native.SEResNet.create('seresnet18', { seed: 3, numClasses: 10 })
  const x = input([1, 3, 64, 64], 1)
  const want = model.forwardSync(x, [1, 3, 64, 64])
  const pending = [model.forward(x, [1, 3, 64, 64]), model.forward(x, [1, 3, 64, 64])]
  model.dispose()
  for (const p of pending) t.deepEqual(await p, want)
  t.throws(() => model.forwardSync(x, [1, 3, 64, 64]), { message: /dispose/ })
  await t.throwsAsync(model.forward(x, [1, 3, 64, 64]), { message: /dispose/ })
})

test('memory: seresnet50 batch 1 peak RSS below weights + 150 MB, no growth over 200 forwards', (t) => {
  const out = execFileSync(process.execPath, ['--import=tsx', '--expose-gc', join(__dirname, 'helpers', 'memory-child.ts'), '200', '224'], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: { ...process.env, SENET_NUM_THREADS: '2' },
  })
  const r = JSON.parse(out) as { weightsBytes: number; afterLoad: number; peakWhileLoading: number; peakWhileRunning: number; samples: number[] }
  const MB = 1 << 20
  t.log(`weights ${(r.weightsBytes / MB).toFixed(0)} MB, RSS after load ${(r.afterLoad / MB).toFixed(0)} MB, peak while loading ${(r.peakWhileLoading / MB).toFixed(0)} MB, peak while running ${(r.peakWhileRunning / MB).toFixed(0)} MB`)
  t.true(r.peakWhileRunning < r.weightsBytes + 150 * MB, `peak RSS while running ${(r.peakWhileRunning / MB).toFixed(1)} MB`)
  // Growth: the last 50 samples against samples 20..70 (after warm-up allocations). A
  // leak of one activation per call (≥ 0.6 MB) would add ≥ 80 MB over 130 calls.
  const med = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]
  const early = med(r.samples.slice(20, 70))
  const late = med(r.samples.slice(-50))
  t.true(late - early < 8 * MB, `RSS grew by ${((late - early) / MB).toFixed(1)} MB over 130 forwards`)
})

// An image's logits are bitwise the same alone or in any batch (the executor's kernels
// never depend on how work is split), checked on the full-width architectures, whose
// SE layers reach the excitation's four-samples-per-pass path (batch >= 4, >= 64
// channels) and whose 56x56/28x28 blocks take the gated conv3 path.
for (const arch of ['seresnet50', 'seresnext50_32x4d'] as const) {
  test(`native ${arch}: each image of a batch of 5 equals the image alone, bit for bit`, (t) => {
    const m = native.SEResNet.create(arch, { seed: 3 })
    for (const [h, w] of [[96, 80], [224, 224]]) {
      const shape: [number, number, number, number] = [5, 3, h, w]
      const x = input(shape, 9)
      const batch = m.forwardSync(x, shape)
      const per = 3 * h * w
      for (let i = 0; i < 5; i++) {
        const one = m.forwardSync(x.subarray(i * per, (i + 1) * per), [1, 3, h, w])
        t.deepEqual(Array.from(one), Array.from(batch.subarray(i * m.numClasses, (i + 1) * m.numClasses)), `${h}×${w} image ${i}`)
      }
    }
    m.dispose()
  })
}
