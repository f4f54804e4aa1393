/**
 * Run in a child process by model-runtime.spec.ts (fresh heap, nothing else resident):
 * builds seresnet50 (random weights, native), then runs 200 batch-1 forwards and reports
 * RSS samples as JSON on stdout. `--expose-gc` lets it settle the JS heap first.
 */
import { SEResNet } from '../../lib/index'

const forwards = Number(process.argv[2] ?? 200)
const size = Number(process.argv[3] ?? 224)
const gc = (globalThis as { gc?: () => void }).gc
const rss = (): number => process.memoryUsage().rss
let peak = rss()
const model = SEResNet.create('seresnet50', { seed: 7 })
peak = Math.max(peak, rss())
gc?.()
const afterLoad = rss()
const x = new Float32Array(3 * size * size).map((_, i) => Math.sin(i * 0.37))
const samples: number[] = []
for (let i = 0; i < forwards; i++) {
  model.forwardSync(x, [1, 3, size, size])
  const r = rss()
  peak = Math.max(peak, r)
  samples.push(r)
}
const weightsBytes = model.numParams * 4
model.dispose()
process.stdout.write(JSON.stringify({ weightsBytes, afterLoad, peakWhileLoading: peak, peakWhileRunning: Math.max(...samples), samples }))
