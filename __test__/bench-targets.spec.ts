/**
 * `bench/targets.mjs`: the verdicts on issue #4's speed targets that `bench:model` prints
 * for its run and `npm run bench:targets` for several saved runs. Synthetic results with
 * known ratios: each threshold is judged on the right side, medians and paired medians
 * are computed over the right numbers, and bad input is refused with a clear error.
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'

import test from 'ava'

interface Cell {
  arch: string
  batch: number
  threads: number
  engine: string
  medianMs: number
  samplesMs: number[]
  fractionOfPeak: number
}
interface Run {
  info?: Record<string, unknown>
  cells: Cell[]
  scaling?: { arch: string; batch: number; engine: string; speedup: number }[]
  concurrency?: { identical: boolean; throughputRatio: number }
}
interface Verdict {
  id: string
  values: number[]
  runs: number
  runsMet: number
  median: number | null
  pairedMedian: number | null
  met: boolean | null
}
interface TargetsModule {
  evaluateTargets(runs: unknown): Verdict[]
  targetsTable(results: Verdict[]): string
}

const load = (): Promise<TargetsModule> =>
  import(pathToFileURL(path.join(__dirname, '..', 'bench', 'targets.mjs')).href) as Promise<TargetsModule>

/**
 * One run: resnet50 on senet takes a power-of-two time per batch and thread count,
 * seresnet50 `se` × that and onnxruntime `ratio` × seresnet50's (exact ratios when `se`
 * is 1 or `ratio` is left at its default); every engine gets the same 3 samples scaled.
 */
function run(opts: { ratio?: Record<string, number>; se?: number; peak?: number; scaling?: number; conc?: number; identical?: boolean }): Run {
  const cells: Cell[] = []
  const samples = (ms: number) => [ms * 0.98, ms, ms * 1.03]
  for (const [batch, threads] of [[1, 1], [1, 2], [8, 1], [8, 2]]) {
    const key = `${batch}x${threads}`
    const base = (64 * batch) / threads
    const se = opts.se ?? 1
    const s = base * se
    const r = opts.ratio?.[key] ?? 1.4
    cells.push({ arch: 'seresnet50', batch, threads, engine: 'senet', medianMs: s, samplesMs: samples(s), fractionOfPeak: opts.peak ?? 0.85 })
    cells.push({ arch: 'seresnet50', batch, threads, engine: 'onnxruntime', medianMs: s * r, samplesMs: samples(s * r), fractionOfPeak: 0.6 })
    cells.push({ arch: 'resnet50', batch, threads, engine: 'senet', medianMs: base, samplesMs: samples(base), fractionOfPeak: opts.peak ?? 0.85 })
  }
  return {
    info: {},
    cells,
    scaling: [{ arch: 'seresnet50', batch: 8, engine: 'senet', speedup: opts.scaling ?? 1.9 }],
    concurrency: { identical: opts.identical ?? true, throughputRatio: opts.conc ?? 1.05 },
  }
}

const byId = (v: Verdict[], id: string): Verdict => {
  const r = v.find((x) => x.id === id)
  if (!r) throw new Error(`no target ${id}`)
  return r
}

test('each target is judged on the right side of its threshold', async (t) => {
  const { evaluateTargets } = await load()
  // Exactly at each threshold: met (the SE boundary in a run of its own, to keep the
  // ratios exact).
  const pass = evaluateTargets([run({ ratio: { '8x2': 1.5, '1x2': 1.3, '1x1': 1.2, '8x1': 1.2 }, peak: 0.6, scaling: 1.8, conc: 1.0 })])
  for (const v of pass) t.is(v.met, true, v.id)
  for (const v of evaluateTargets([run({ se: 1.05 })]).filter((x) => x.id.startsWith('se-'))) {
    t.is(v.median, 1.05, v.id)
    t.is(v.met, true, v.id)
  }
  const fail = evaluateTargets([run({ ratio: { '8x2': 1.49, '1x2': 1.29, '1x1': 1.19, '8x1': 1.19 }, se: 1.051, peak: 0.59, scaling: 1.79, conc: 0.99 })])
  for (const v of fail) t.is(v.met, false, v.id)
  t.is(fail.length, 11)
  t.true(Math.abs((byId(fail, 'b8-2t').median ?? 0) - 1.49) < 1e-12)
})

test('wrong results under concurrency fail that target whatever the speed', async (t) => {
  const { evaluateTargets } = await load()
  const v = byId(evaluateTargets([run({ conc: 1.5, identical: false })]), 'concurrency')
  t.is(v.met, false)
  t.is(v.runsMet, 0)
})

test('over several runs: the median decides, and the runs meeting a target are counted', async (t) => {
  const { evaluateTargets, targetsTable } = await load()
  const ratios = [1.2, 1.55, 1.45, 1.6, 1.3]
  const v = byId(evaluateTargets(ratios.map((r) => run({ ratio: { '8x2': r } }))), 'b8-2t')
  t.deepEqual(v.values.map((x) => +x.toFixed(12)), ratios)
  t.is(v.median, 1.45)
  t.is(v.runsMet, 2)
  t.is(v.runs, 5)
  t.is(v.met, false)
  // Samples scaled alike: every round's ratio equals the run's ratio.
  t.true(Math.abs((v.pairedMedian ?? 0) - 1.45) < 1e-12)
  const table = targetsTable(evaluateTargets(ratios.map((r) => run({ ratio: { '8x2': r } }))))
  t.regex(table, /batch 8, 2 threads \| ≥ 1\.5× \| 1\.200× \/ 1\.550× \/ 1\.450× \/ 1\.600× \/ 1\.300× \| 1\.450× \(paired 1\.450×\) \| 2 of 5 \| \*\*not met\*\*/)
})

test('the paired median pairs the samples of one round', async (t) => {
  const { evaluateTargets } = await load()
  const r = run({})
  const senet = r.cells.find((c) => c.arch === 'seresnet50' && c.batch === 8 && c.threads === 2 && c.engine === 'senet')!
  const ort = r.cells.find((c) => c.arch === 'seresnet50' && c.batch === 8 && c.threads === 2 && c.engine === 'onnxruntime')!
  senet.samplesMs = [100, 200, 100, 100]
  ort.samplesMs = [150, 200, 160, 170, 999] // extra sample without a partner: ignored
  const v = byId(evaluateTargets([r]), 'b8-2t')
  t.is(v.pairedMedian, 1.55) // median of 1.5, 1.0, 1.6, 1.7
})

test('a run without the cells of a target gives no verdict for it, not a pass', async (t) => {
  const { evaluateTargets, targetsTable } = await load()
  const r = run({ ratio: { '8x2': 1.6 } })
  r.cells = r.cells.filter((c) => c.threads === 2)
  delete r.scaling
  const v = evaluateTargets([r])
  t.is(byId(v, 'b1-1t').met, null)
  t.is(byId(v, 'scaling').met, null)
  t.is(byId(v, 'b8-2t').met, true)
  t.regex(targetsTable(v), /batch 1, 1 thread \| ≥ 1\.2× \| no data/)
})

test('bad input is refused with an error naming it', async (t) => {
  const { evaluateTargets } = await load()
  t.throws(() => evaluateTargets([]), { instanceOf: RangeError, message: /runs: expected at least one bench:model result, got an empty array/ })
  t.throws(() => evaluateTargets('x'), { instanceOf: TypeError, message: /runs: expected an array of bench:model results, got string/ })
  t.throws(() => evaluateTargets(null), { instanceOf: TypeError, message: /got null/ })
  t.throws(() => evaluateTargets([run({}), { cells: 3 }]), { instanceOf: TypeError, message: /runs\[1\]: expected a bench:model result with a cells array/ })
})
