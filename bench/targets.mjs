// The speed targets of issue #4, judged on one or more `bench:model` results.
//
//   node bench/targets.mjs [FILE.json ...]     (default: bench/results/model.json)
//   npm run bench:targets -- runs/*.json
//
// On a shared machine one run says little: save several runs' JSON (e.g. copy
// bench/results/model.json after each `npm run bench:model`) and pass them all. For each
// target this prints every run's value, the median over the runs, the paired median
// where the two engines' samples were taken in the same rounds (the median of the
// per-round ratios, then over runs), how many runs met it, and the verdict on the median.
// `bench:model` itself prints the table for its own run.
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { median, markdownTable } from './common.mjs'

/**
 * The targets: `value(run)` returns `{ value, paired? }` or null when the run lacks the
 * cells (e.g. a `--threads 2` run has no 1-thread rows). `met(v)` judges a value.
 */
export const TARGETS = [
  { id: 'b8-2t', text: 'seresnet50 vs onnxruntime, batch 8, 2 threads', want: '≥ 1.5×', met: (v) => v >= 1.5, value: (r) => ratio(r, 8, 2), fmt: times },
  { id: 'b1-2t', text: 'seresnet50 vs onnxruntime, batch 1, 2 threads', want: '≥ 1.3×', met: (v) => v >= 1.3, value: (r) => ratio(r, 1, 2), fmt: times },
  { id: 'b1-1t', text: 'seresnet50 vs onnxruntime, batch 1, 1 thread', want: '≥ 1.2×', met: (v) => v >= 1.2, value: (r) => ratio(r, 1, 1), fmt: times },
  { id: 'b8-1t', text: 'seresnet50 vs onnxruntime, batch 8, 1 thread', want: '≥ 1.2×', met: (v) => v >= 1.2, value: (r) => ratio(r, 8, 1), fmt: times },
  ...[[1, 1], [1, 2], [8, 1], [8, 2]].map(([batch, threads]) => ({
    id: `se-b${batch}-${threads}t`,
    text: `SE overhead (own seresnet50 / own resnet50), batch ${batch}, ${threads} thread${threads > 1 ? 's' : ''}`,
    want: '≤ 1.05',
    met: (v) => v <= 1.05,
    value: (r) => seOverhead(r, batch, threads),
    fmt: (v) => v.toFixed(3),
  })),
  { id: 'peak', text: 'senet forward at its lowest row, fraction of the measured FMA peak', want: '≥ 60%', met: (v) => v >= 0.6, value: lowestPeak, fmt: (v) => `${(100 * v).toFixed(0)}%` },
  { id: 'scaling', text: 'seresnet50 2-thread / 1-thread throughput, batch 8', want: '≥ 1.8×', met: (v) => v >= 1.8, value: scaling, fmt: times },
  { id: 'concurrency', text: '16 concurrent forwards / one after another (identical results)', want: '≥ 1.0×', met: (v) => v >= 1.0, value: concurrency, fmt: times },
]

function times(v) {
  return `${v.toFixed(3)}×`
}

function cell(run, arch, batch, threads, engine) {
  return run.cells.find((c) => c.arch === arch && c.batch === batch && c.threads === threads && c.engine === engine)
}

/** Median over rounds of a / b, pairing the samples of one round (interleaved timing). */
function pairedMedian(a, b) {
  const n = Math.min(a.length, b.length)
  return n ? median(Array.from({ length: n }, (_, i) => a[i] / b[i])) : undefined
}

function ratio(run, batch, threads) {
  const s = cell(run, 'seresnet50', batch, threads, 'senet')
  const o = cell(run, 'seresnet50', batch, threads, 'onnxruntime')
  if (!s || !o) return null
  return { value: o.medianMs / s.medianMs, paired: pairedMedian(o.samplesMs, s.samplesMs) }
}

function seOverhead(run, batch, threads) {
  const se = cell(run, 'seresnet50', batch, threads, 'senet')
  const plain = cell(run, 'resnet50', batch, threads, 'senet')
  if (!se || !plain) return null
  return { value: se.medianMs / plain.medianMs, paired: pairedMedian(se.samplesMs, plain.samplesMs) }
}

function lowestPeak(run) {
  const f = run.cells.filter((c) => c.engine === 'senet' && Number.isFinite(c.fractionOfPeak)).map((c) => c.fractionOfPeak)
  return f.length ? { value: Math.min(...f) } : null
}

function scaling(run) {
  const s = (run.scaling ?? []).find((x) => x.arch === 'seresnet50' && x.engine === 'senet' && x.batch === 8)
  return s ? { value: s.speedup } : null
}

function concurrency(run) {
  const c = run.concurrency
  if (!c || !Number.isFinite(c.throughputRatio)) return null
  // Wrong results fail the target whatever the speed.
  return { value: c.identical ? c.throughputRatio : 0 }
}

/**
 * Judges the targets on `runs` (parsed `bench:model` JSON objects). Returns one entry per
 * target: the per-run values, the median (and paired median), how many runs met the
 * target and whether the median meets it (`met`: null when no run had the cells).
 */
export function evaluateTargets(runs) {
  if (!Array.isArray(runs)) throw new TypeError(`runs: expected an array of bench:model results, got ${runs === null ? 'null' : typeof runs}`)
  if (runs.length === 0) throw new RangeError('runs: expected at least one bench:model result, got an empty array')
  runs.forEach((r, i) => {
    if (!r || !Array.isArray(r.cells)) throw new TypeError(`runs[${i}]: expected a bench:model result with a cells array`)
  })
  return TARGETS.map((t) => {
    const vals = runs.map((r) => t.value(r)).filter(Boolean)
    if (vals.length === 0) return { id: t.id, text: t.text, want: t.want, values: [], runs: 0, runsMet: 0, median: null, pairedMedian: null, met: null }
    const values = vals.map((v) => v.value)
    const paired = vals.map((v) => v.paired).filter((v) => Number.isFinite(v))
    const med = median(values)
    return {
      id: t.id,
      text: t.text,
      want: t.want,
      values,
      runs: values.length,
      runsMet: values.filter((v) => t.met(v)).length,
      median: med,
      pairedMedian: paired.length === values.length ? median(paired) : null,
      met: t.met(med),
    }
  })
}

/** The verdicts as a markdown table. */
export function targetsTable(results) {
  const fmt = Object.fromEntries(TARGETS.map((t) => [t.id, t.fmt]))
  const rows = results.map((r) => {
    const f = fmt[r.id]
    if (r.met === null) return [r.text, r.want, 'no data', '', '', '']
    const per = r.values.length > 1 ? r.values.map((v) => f(v)).join(' / ') : f(r.values[0])
    return [r.text, r.want, per, r.pairedMedian === null ? f(r.median) : `${f(r.median)} (paired ${f(r.pairedMedian)})`, `${r.runsMet} of ${r.runs}`, r.met ? 'met' : '**not met**']
  })
  return markdownTable(['target (issue #4)', 'wanted', 'per run', 'median', 'runs meeting it', 'verdict (median)'], rows)
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const files = process.argv.slice(2)
  if (files.length === 0) files.push(path.join(path.dirname(new URL(import.meta.url).pathname), 'results', 'model.json'))
  const runs = files.map((f) => {
    try {
      return JSON.parse(fs.readFileSync(f, 'utf8'))
    } catch (e) {
      console.error(`bench/targets.mjs: cannot read ${f}: ${e.message}`)
      process.exit(2)
    }
  })
  const results = evaluateTargets(runs)
  const quick = runs.filter((r) => r.info?.quick).length
  const contended = runs.filter((r) => r.info?.contended || r.info?.busy).length
  console.log(`${runs.length} run${runs.length > 1 ? 's' : ''} (${files.join(', ')})${quick ? `; ${quick} QUICK (indicative only)` : ''}${contended ? `; ${contended} flagged as contended or busy` : ''}\n`)
  console.log(targetsTable(results))
}
