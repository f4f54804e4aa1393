// Whole-model benchmark (first version): seresnet50 and resnet50, 224×224, batch 1 and
// 8, native backend (and pure JS at batch 1 with --js), same random weights per arch.
// Usage: node bench/model.mjs [--threads N] [--js] [--rounds R]
// Prints a markdown table and writes bench/results/model-<threads>t.json.
import { createRequire } from 'node:module'
import { median, interleave, markdownTable, machine, writeJson } from './common.mjs'

const require = createRequire(import.meta.url)
const native = require('../dist/index.js')
const js = require('../dist/js/index.js')

const args = process.argv.slice(2)
const opt = (name, dflt) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt)
const threads = opt('--threads', native.getNumThreads())
const rounds = opt('--rounds', 10)
const withJs = args.includes('--js')
native.setNumThreads(threads)

const ARCHS = ['seresnet50', 'resnet50']
const BATCHES = [1, 8]
const GFLOP = { seresnet50: 8.2, resnet50: 8.2 } // per 224×224 image: 2 × MACs (4.09 / 4.1 G)

const models = Object.fromEntries(ARCHS.map((a) => [a, native.SEResNet.create(a, { seed: 1 })]))
const jsModels = withJs ? Object.fromEntries(ARCHS.map((a) => [a, js.SEResNet.create(a, { seed: 1 })])) : {}

const rows = []
const results = []
for (const batch of BATCHES) {
  const shape = [batch, 3, 224, 224]
  const x = new Float32Array(batch * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.37))
  const engines = ARCHS.map((a) => ({ name: `native ${a}`, run: () => models[a].forwardSync(x, shape) }))
  if (withJs && batch === 1) for (const a of ARCHS) engines.push({ name: `js ${a}`, run: () => jsModels[a].forwardSync(x, shape) })
  const samples = await interleave(engines, { warmup: 1, minRounds: rounds, maxRounds: rounds, budgetMs: 0, minRoundsSlow: 2, slowMs: 5000 })
  const med = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]))
  for (const [name, ms] of Object.entries(med)) {
    const arch = name.split(' ')[1]
    rows.push([name, String(batch), ms.toFixed(1), ((batch * 1000) / ms).toFixed(2), ((GFLOP[arch] * batch) / (ms / 1000)).toFixed(1)])
  }
  const overhead = med['native seresnet50'] / med['native resnet50']
  rows.push([`SE overhead (seresnet50 / resnet50)`, String(batch), overhead.toFixed(3), '', ''])
  results.push({ batch, medianMs: med, samples, seOverhead: overhead })
  console.error(`done batch ${batch}`)
}
const info = { ...machine(), threads: native.getNumThreads(), simd: native.simdLevel(), rounds }
const table = markdownTable(['engine / model', 'batch', 'median ms', 'images/s', 'GFLOP/s'], rows)
console.log(`Whole models, 224×224, ${info.threads} threads, SIMD ${info.simd}, ${info.cpu}, Node ${info.node}, ${info.date}\n`)
console.log(table)
const file = writeJson(`model-${info.threads}t.json`, { info, results, table })
console.error(`wrote ${file}`)
for (const m of [...Object.values(models), ...Object.values(jsModels)]) m.dispose()
