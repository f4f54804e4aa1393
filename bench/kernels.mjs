// SE kernel benchmark: native seBlock vs the native kernels called one by one, the
// pure-JS backend and TensorFlow.js (cpu and wasm backends), on the shapes.
// Usage: node bench/kernels.mjs [--threads N] [--quick]
// Prints a markdown table and writes bench/results/kernels.json.
import { createRequire } from 'node:module'
import { median, interleave, markdownTable, machine, writeJson, randomF32 } from './common.mjs'

const require = createRequire(import.meta.url)
const native = require('../dist/index.js')
const js = require('../dist/js/index.js')
const addon = require('../index.js')

const args = process.argv.slice(2)
const threadsArg = args.includes('--threads') ? Number(args[args.indexOf('--threads') + 1]) : native.getNumThreads()
const quick = args.includes('--quick')
native.setNumThreads(threadsArg)

const SHAPES = [
  [1, 256, 56, 56],
  [8, 256, 56, 56],
  [1, 2048, 7, 7],
  [32, 2048, 7, 7],
  [8, 512, 28, 28],
]
const R = 16

async function loadTf() {
  try {
    const tf = require('@tensorflow/tfjs')
    require('@tensorflow/tfjs-backend-wasm')
    return tf
  } catch (e) {
    console.error(`tfjs unavailable (${e.message}); its columns are skipped`)
    return null
  }
}

/** The SE block in tfjs (NHWC, tfjs's native layout), weights pre-transposed. */
function tfSeBlock(tf, x, w1t, b1, w2t, b2, n, c) {
  return tf.tidy(() => {
    const z = tf.mean(x, [1, 2])
    const h = tf.relu(tf.add(tf.matMul(z, w1t), b1))
    const g = tf.sigmoid(tf.add(tf.matMul(h, w2t), b2))
    return tf.mul(x, tf.reshape(g, [n, 1, 1, c]))
  })
}

const tf = await loadTf()
const rows = []
const results = []
for (const shape of SHAPES) {
  const [n, c, h, w] = shape
  const cr = c / R
  const len = n * c * h * w
  const x = randomF32(len, 1)
  const weights = { w1: randomF32(cr * c, 2), b1: randomF32(cr, 3), w2: randomF32(c * cr, 4), b2: randomF32(c, 5) }
  const out = new Float32Array(len)
  const copyDst = new Float32Array(len)
  const engines = [
    { name: 'copy', run: () => addon.copyF32(x, copyDst) },
    { name: 'native seBlock', run: () => native.seBlock(x, shape, weights, { out }) },
    {
      name: 'native separate',
      run: () => {
        const z = native.squeeze(x, shape)
        const g = native.excite(z, n, weights)
        native.scale(x, shape, g, { out })
      },
    },
    { name: 'pure JS', run: () => js.seBlock(x, shape, weights, { out }) },
  ]
  const tfState = {}
  if (tf) {
    for (const backend of ['cpu', 'wasm']) {
      engines.push({
        name: `tfjs-${backend}`,
        run: async () => {
          if (tf.getBackend() !== backend) await tf.setBackend(backend)
          if (!tfState[backend]) {
            tfState[backend] = {
              x: tf.tensor4d(x, [n, h, w, c]),
              w1t: tf.transpose(tf.tensor2d(weights.w1, [cr, c])),
              b1: tf.tensor1d(weights.b1),
              w2t: tf.transpose(tf.tensor2d(weights.w2, [c, cr])),
              b2: tf.tensor1d(weights.b2),
            }
          }
          const s = tfState[backend]
          const y = tfSeBlock(tf, s.x, s.w1t, s.b1, s.w2t, s.b2, n, c)
          await y.data()
          y.dispose()
        },
      })
    }
  }
  // Steady state: each sample is the mean of 5 back-to-back calls (1 for tfjs-cpu, which
// takes seconds), so every engine is measured with its own data warm in the caches.
  for (const e of engines) if (e.name === 'tfjs-cpu') e.inner = 1
  const samples = await interleave(engines, quick ? { minRounds: 3, maxRounds: 5, budgetMs: 500, gapMs: 20, inner: 5 } : { gapMs: 20, inner: 5 })
  for (const st of Object.values(tfState)) Object.values(st).forEach((t) => t.dispose())
  const med = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]))
  const bytes = len * 4
  const copyGBs = (2 * bytes) / (med.copy * 1e6)
  const seGBs = (3 * bytes) / (med['native seBlock'] * 1e6)
  const fmt = (v) => (v === undefined ? 'n/a' : v < 10 ? v.toFixed(3) : v.toFixed(1))
  rows.push([
    `[${shape.join(',')}]`,
    fmt(med['native seBlock']),
    fmt(med['native separate']),
    fmt(med['pure JS']),
    fmt(med['tfjs-cpu']),
    fmt(med['tfjs-wasm']),
    (med['pure JS'] / med['native seBlock']).toFixed(1) + '×',
    seGBs.toFixed(1),
    copyGBs.toFixed(1),
    (seGBs / copyGBs).toFixed(2),
  ])
  results.push({ shape, medianMs: med, samples, effectiveGBs: seGBs, copyGBs })
  console.error(`done [${shape}]`)
}

const header = [
  'shape [N,C,H,W]',
  'native seBlock ms',
  'native squeeze+excite+scale ms',
  'pure JS ms',
  'tfjs-cpu ms',
  'tfjs-wasm ms',
  'native vs JS',
  'seBlock GB/s (3×bytes/t)',
  'copy GB/s (2×bytes/t)',
  'seBlock/copy',
]
const info = { ...machine(), threads: native.getNumThreads(), simd: native.simdLevel(), reduction: R }
const table = markdownTable(header, rows)
console.log(`SE kernels, ${info.threads} threads, SIMD ${info.simd}, ${info.cpu}, Node ${info.node}, ${info.date}\n`)
console.log(table)
const file = writeJson(`kernels-${info.threads}t.json`, { info, results, table })
console.error(`wrote ${file}`)
