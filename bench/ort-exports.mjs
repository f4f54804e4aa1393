// Is the baseline fair? onnxruntime-node on the graph `bench:model` gives it
// (`model.toOnnx({ inputSize: [224, 224] })`) vs on PyTorch's own export of the same timm
// architecture (tools/reference/torch_onnx.py, also fixed at 224×224), same session
// options as `bench:model`, runs alternated in pairs in one process.
//
//   /usr/bin/python3 tools/reference/torch_onnx.py seresnet50 /tmp/seresnet50_torch.onnx
//   node bench/ort-exports.mjs seresnet50 /tmp/seresnet50_torch.onnx [--batch 1] [--threads 2] [--pairs 20]
//
// Prints both medians and the median of the per-pair ratios (PyTorch export / ours;
// > 1: ours runs faster in onnxruntime).
import { createRequire } from 'node:module'
import fs from 'node:fs'
import { alternatePairs, intOption, median } from './common.mjs'

const require = createRequire(import.meta.url)
const ort = require('onnxruntime-node')
const native = require('../dist/index.js')

const args = process.argv.slice(2)
const [arch, file] = args
if (!arch || !file || !fs.existsSync(file)) {
  console.error('usage: node bench/ort-exports.mjs ARCH TORCH_EXPORT.onnx [--batch N] [--threads T] [--pairs P]')
  process.exit(2)
}
const [batch, threads, pairs] = [intOption(args, 'batch', 1), intOption(args, 'threads', 2), intOption(args, 'pairs', 20)]
const opts = { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' }
const sessions = [
  await ort.InferenceSession.create(native.SEResNet.create(arch, { seed: 1 }).toOnnx({ inputSize: [224, 224] }), opts),
  await ort.InferenceSession.create(fs.readFileSync(file), opts),
]
const x = new ort.Tensor('float32', new Float32Array(batch * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.37)), [batch, 3, 224, 224])
const [runOurs, runTorch] = sessions.map((s) => () => s.run({ [s.inputNames[0]]: x }))
for (let i = 0; i < 2; i++) for (const run of [runOurs, runTorch]) await run()
// 50 ms gaps: onnxruntime's pool keeps spinning for a while after a run.
const { ms, ratios } = await alternatePairs(runOurs, runTorch, { pairs, gapMs: 50 })
console.log(
  `${arch} batch ${batch}, ${threads} thread(s), ${pairs} pairs: onnxruntime on toOnnx() ${median(ms[0]).toFixed(2)} ms, ` +
    `on the PyTorch export ${median(ms[1]).toFixed(2)} ms, median PyTorch/ours ${median(ratios).toFixed(3)}`,
)
