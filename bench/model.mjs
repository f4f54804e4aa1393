// Whole-model benchmark: senet (native) vs onnxruntime-node vs senet's pure-JS backend,
// on the same weights (seresnet50 and resnet50, deterministic random weights, exported
// to ONNX by `model.toOnnx({ inputSize: [224, 224], batchSize })`, one graph per batch size),
// 224×224, batch 1 and 8, 1 and 2 threads.
//
//   node bench/model.mjs [--quick] [--no-js] [--threads 1,2] [--batches 1,8] [--chart PATH]
//
// Run from the compiled package (`npm run build` first). Before timing, every engine's
// logits are compared with senet's on the same input; any max |Δlogit| > 1e-3 aborts.
// Engines are interleaved round by round (common.mjs `interleave`) so a noisy neighbour
// slows them alike, with 50 ms of idle time before each run so that no engine is timed
// while the previous one's pool threads are still spinning; medians are reported, and the machine's peak FMA rate is measured
// in the same run by a native microbenchmark (`peakGflops`) for "fraction of peak". A
// cache-sensitive layer (`layerProbeGflops`), timed between the timings of each thread
// count, shows whether another workload shared the caches meanwhile (which the FMA peak
// does not show); the header flags such a run.
//
// Threads: senet's pool is resized with setNumThreads; onnxruntime gets one session per
// thread count (intraOpNumThreads; its thread pool is per session, spinning left at its
// default); the pure-JS backend is single-threaded and runs in the 1-thread rows only.
//
// Writes bench/results/model.json (model-quick.json with --quick), prints markdown
// tables (the last one judges this run against the speed targets of issue #4, as
// `bench/targets.mjs` does for several saved runs), and draws bench/model-chart.svg
// (not with --quick unless --chart is given).
import { createRequire } from 'node:module'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { median, interleave, markdownTable, machine, writeJson, randomF32 } from './common.mjs'
import { groupedBarsSvg } from './chart.mjs'
import { evaluateTargets, targetsTable } from './targets.mjs'

const require = createRequire(import.meta.url)
const native = require('../dist/index.js')
const js = require('../dist/js/index.js')
const addon = require('../index.js')
const { buildProgram, randomParams, outputSize } = require('../dist/model/build.js')
const { resolveConfig } = require('../dist/model/config.js')

const args = process.argv.slice(2)
const list = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1].split(',').map(Number) : dflt)
const quick = args.includes('--quick')
const withJs = !args.includes('--no-js')
const THREADS = list('--threads', [1, 2])
const BATCHES = list('--batches', [1, 8])
const chartPath = args.includes('--chart')
  ? path.resolve(args[args.indexOf('--chart') + 1])
  : quick ? null : path.join(path.dirname(new URL(import.meta.url).pathname), 'model-chart.svg')

const ARCHS = ['seresnet50', 'resnet50']
const SIZE = 224
const SEED = 1
/** Max |Δlogit| between engines before anything is timed. */
const AGREE = 1e-3
const TIMING = quick
  ? { warmup: 1, minRounds: 3, maxRounds: 3, budgetMs: 0, minRoundsSlow: 1, slowMs: 3000, gapMs: 50 }
  : { warmup: 2, minRounds: 10, maxRounds: 40, budgetMs: 8000, minRoundsSlow: 3, slowMs: 3000, gapMs: 50 }
const PEAK_MS = quick ? 200 : 400
const PEAK_REPEATS = quick ? 1 : 3
const PROBE_MS = quick ? 100 : 200
/** Layer probe below this fraction of the FMA peak: the run is flagged as contended. */
const PROBE_QUIET = 0.7
const CONCURRENT = 16

let ort
try {
  ort = require('onnxruntime-node')
} catch (e) {
  console.error(`onnxruntime-node does not load (${e.message.split('\n')[0]}); install the devDependencies (npm ci)`)
  process.exit(1)
}

/**
 * Multiply-accumulates of one forward pass of `program` on an input of `inputShape`
 * [n, c, h, w], from the program's ops (shapes inferred as the executors do). Counts
 * the convolutions, the SE unit's two fully connected layers and the classifier;
 * pooling, the SE scale and residual adds are not multiply-adds.
 */
export function countMacs(program, inputShape) {
  const [n, , h, w] = inputShape
  const hw = new Map([[0, [h, w]]])
  let macs = 0
  for (const op of program.ops) {
    const src = hw.get(op.op === 'add' ? op.a : op.x)
    let out = src
    if (op.op === 'conv') {
      out = [0, 1].map((i) => outputSize(src[i], i ? op.kw : op.kh, op.stride, op.pad, false))
      macs += n * op.cout * out[0] * out[1] * (op.cin / op.groups) * op.kh * op.kw
    } else if (op.op === 'maxpool') {
      out = src.map((s) => outputSize(s, op.k, op.stride, op.pad, op.ceil))
    } else if (op.op === 'se') {
      macs += n * 2 * op.c * op.cr
    } else if (op.op === 'gap') {
      out = [1, 1]
    } else if (op.op === 'linear') {
      macs += n * op.cin * op.cout
      out = [1, 1]
    }
    hw.set(op.y, out)
  }
  return macs
}

function maxAbsDiff(a, b) {
  if (a.length !== b.length) return Infinity
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return Number.isNaN(d) ? Infinity : d
}

const log = (...m) => console.error(...m)
const loadStart = os.loadavg()

// ------------------------------------------------------------------------- models

log(`building models (${ARCHS.join(', ')}, seed ${SEED}) and exporting them to ONNX...`)
const models = {}
for (const arch of ARCHS) {
  const config = resolveConfig(arch)
  // The program only to count MACs (the same one create() compiles), then dropped.
  const macsPerImage = countMacs(buildProgram(config, randomParams(config, SEED), { inPlace: true }), [1, 3, SIZE, SIZE])
  const model = native.SEResNet.create(arch, { seed: SEED })
  // Every dimension fixed (one graph per batch size): onnxruntime runs a graph with fixed
  // H, W 1–7% faster than one with symbolic H, W (resnet50 the most), and a fixed batch
  // lets it plan every buffer for that batch; the baseline gets its best graph.
  const onnxBytes = Object.fromEntries(BATCHES.map((b) => [b, model.toOnnx({ inputSize: [SIZE, SIZE], batchSize: b })]))
  const jsModel = withJs ? js.SEResNet.create(arch, { seed: SEED }) : null
  models[arch] = { model, onnxBytes, jsModel, macsPerImage, numParams: model.numParams }
  log(`  ${arch}: ${(macsPerImage / 1e9).toFixed(3)} GMAC/image, ${model.numParams} params, ONNX ${(onnxBytes[BATCHES[0]].length / 2 ** 20).toFixed(1)} MiB per batch size`)
}

async function ortSession(bytes, threads) {
  return ort.InferenceSession.create(bytes, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  })
}

// ------------------------------------------------------------------------- measure

const peaks = {} // threads → GFLOP/s
// threads → GFLOP/s of the cache-sensitive layer probe (`layerProbeGflops`: 1×1 conv
// 1024→256 @14×14, batch 1, its working set the size of a core's L2; the median of its
// runs over PROBE_MS), measured before each batch size's timings and after the last. The
// FMA peak touches no memory and stays high when another tenant shares the cores' caches;
// this layer (and every real kernel) then slows down, so the samples tell a quiet run
// from a contended one (as far as the contention overlaps them).
const probes = {}
const probe = () => addon.layerProbeGflops(PROBE_MS)
const cells = [] // one per (arch, batch, threads, engine)
const agreement = []

for (const threads of THREADS) {
  native.setNumThreads(threads)
  const peakRuns = []
  for (let i = 0; i < PEAK_REPEATS; i++) peakRuns.push(addon.peakGflops(PEAK_MS))
  peaks[threads] = Math.max(...peakRuns) // the least disturbed run is the closest to the ceiling
  probes[threads] = []
  log(`${threads} thread(s): peak FMA ${peakRuns.map((p) => p.toFixed(0)).join(' / ')} GFLOP/s (${native.simdLevel()})`)

  for (const batch of BATCHES) {
    const sessions = {}
    for (const arch of ARCHS) sessions[arch] = await ortSession(models[arch].onnxBytes[batch], threads)
    probes[threads].push(probe())
    log(`${threads} thread(s): layer probe ${probes[threads].at(-1).toFixed(0)} GFLOP/s`)
    const shape = [batch, 3, SIZE, SIZE]
    const x = randomF32(batch * 3 * SIZE * SIZE, 7 + batch)
    const feeds = { input: new ort.Tensor('float32', x, shape) }
    const engines = []
    for (const arch of ARCHS) {
      const m = models[arch]
      engines.push({ engine: 'senet', arch, name: `senet ${arch}`, run: () => m.model.forward(x, shape) })
      engines.push({ engine: 'onnxruntime', arch, name: `onnxruntime ${arch}`, run: async () => (await sessions[arch].run(feeds)).logits.data })
      if (m.jsModel && batch === 1 && threads === Math.min(...THREADS)) {
        engines.push({ engine: 'js', arch, name: `js ${arch}`, warmup: 0, run: () => m.jsModel.forwardSync(x, shape) })
      }
    }

    // Agreement first (this run doubles as a warmup): every engine against senet.
    log(`batch ${batch}, ${threads} thread(s): checking that the engines agree...`)
    const outputs = {}
    for (const e of engines) outputs[e.name] = await e.run()
    for (const e of engines) {
      if (e.engine === 'senet') continue
      const d = maxAbsDiff(outputs[e.name], outputs[`senet ${e.arch}`])
      agreement.push({ arch: e.arch, batch, threads, engine: e.engine, maxAbsDiff: d })
      if (!(d <= AGREE)) {
        console.error(`ABORT: ${e.name} disagrees with senet at batch ${batch}: max |Δlogit| = ${d} > ${AGREE}`)
        process.exit(2)
      }
    }

    log(`batch ${batch}, ${threads} thread(s): timing ${engines.map((e) => e.name).join(', ')}...`)
    const samples = await interleave(engines, TIMING)
    for (const e of engines) {
      const ms = median(samples[e.name])
      const gflop = (2 * models[e.arch].macsPerImage * batch) / 1e9
      const engineThreads = e.engine === 'js' ? 1 : threads
      cells.push({
        arch: e.arch, batch, threads: engineThreads, engine: e.engine,
        medianMs: ms, samplesMs: samples[e.name],
        imagesPerSec: (batch * 1000) / ms,
        gflops: gflop / (ms / 1000),
        fractionOfPeak: null, // below, once every thread count's peak is known
      })
    }
    for (const s of Object.values(sessions)) await s.release()
  }
  probes[threads].push(probe())
  log(`${threads} thread(s): layer probe after the timings ${probes[threads].at(-1).toFixed(0)} GFLOP/s`)
}
// Against the peak of as many threads as the engine used (the JS backend: one).
for (const c of cells) c.fractionOfPeak = peaks[c.threads] ? c.gflops / peaks[c.threads] : null

// ------------------------------------------------------------------------- concurrency

/** 16 concurrent forward calls on one model vs the same calls one after another. */
async function concurrencyCheck() {
  const threads = Math.max(...THREADS)
  native.setNumThreads(threads)
  const arch = ARCHS[0]
  const { model } = models[arch]
  const shape = [1, 3, SIZE, SIZE]
  const inputs = Array.from({ length: CONCURRENT }, (_, i) => randomF32(3 * SIZE * SIZE, 100 + i))
  await model.forward(inputs[0], shape)
  // Alternated (sequential first in even rounds, concurrent first in odd ones) and
  // compared round by round, so that a noisy neighbour's phases do not favour one order:
  // on the shared AVX2 host, 3 rounds always sequential-first gave 0.93-0.95x where 10
  // alternated ones gave a median of 1.08x.
  const reps = quick ? 2 : 8
  const seqMs = []
  const conMs = []
  const ratios = []
  let identical = true
  let reference
  for (let r = 0; r < reps; r++) {
    let seq, con, tSeq, tCon
    for (const mode of r % 2 === 0 ? ['seq', 'con'] : ['con', 'seq']) {
      const t0 = performance.now()
      if (mode === 'seq') {
        seq = []
        for (const x of inputs) seq.push(await model.forward(x, shape))
        tSeq = performance.now() - t0
      } else {
        con = await Promise.all(inputs.map((x) => model.forward(x, shape)))
        tCon = performance.now() - t0
      }
    }
    seqMs.push(tSeq)
    conMs.push(tCon)
    ratios.push(tSeq / tCon)
    reference ??= seq
    // Results are bitwise identical whatever the scheduling (README: "Threads and SIMD").
    for (let i = 0; i < CONCURRENT; i++) {
      if (maxAbsDiff(con[i], reference[i]) !== 0 || maxAbsDiff(seq[i], reference[i]) !== 0) identical = false
    }
  }
  const seq = median(seqMs)
  const con = median(conMs)
  return {
    arch, threads, calls: CONCURRENT, batch: 1, identical,
    sequentialMs: seq, concurrentMs: con,
    sequentialImagesPerSec: (CONCURRENT * 1000) / seq,
    concurrentImagesPerSec: (CONCURRENT * 1000) / con,
    // Median of the per-round ratios (each round times both in one stretch).
    throughputRatio: median(ratios),
    rounds: reps,
  }
}
log(`concurrency: ${CONCURRENT} concurrent forward calls...`)
const concurrency = await concurrencyCheck()
if (!concurrency.identical) {
  console.error('ABORT: concurrent forward calls returned results different from sequential ones')
  process.exit(3)
}

// ------------------------------------------------------------------------- report

const find = (arch, batch, threads, engine) => cells.find((c) => c.arch === arch && c.batch === batch && c.threads === threads && c.engine === engine)
const x2 = (v) => (v == null || !Number.isFinite(v) ? '' : `${v.toFixed(2)}×`)
const pct = (v) => (v == null ? '' : `${(100 * v).toFixed(1)}%`)
const ENGINES = ['senet', 'onnxruntime', 'js']

const rows = []
for (const arch of ARCHS) {
  for (const batch of BATCHES) {
    for (const threads of THREADS) {
      for (const engine of ENGINES) {
        const c = find(arch, batch, threads, engine)
        if (!c || (engine === 'js' && threads !== Math.min(...THREADS))) continue
        const ortCell = find(arch, batch, threads, 'onnxruntime')
        const plain = arch.startsWith('se') ? find(arch.replace(/^se/, ''), batch, threads, engine) : undefined
        c.vsOnnxruntime = ortCell ? ortCell.medianMs / c.medianMs : null
        c.seOverhead = plain ? c.medianMs / plain.medianMs : null
        rows.push([
          arch, String(batch), engine === 'js' ? '1 (JS)' : String(threads), engine,
          c.medianMs.toFixed(1), c.imagesPerSec.toFixed(2), c.gflops.toFixed(1), pct(c.fractionOfPeak),
          engine === 'onnxruntime' ? '1.00×' : x2(c.vsOnnxruntime), x2(c.seOverhead),
        ])
      }
    }
  }
}
const mainTable = markdownTable(
  ['model', 'batch', 'threads', 'engine', 'median ms', 'images/s', 'GFLOP/s', '% of peak', 'speed vs onnxruntime', 'SE overhead'],
  rows,
)

const scaling = []
const scalingRows = []
if (THREADS.includes(1) && THREADS.includes(2)) {
  const batch = Math.max(...BATCHES)
  for (const arch of ARCHS) {
    for (const engine of ['senet', 'onnxruntime']) {
      const a = find(arch, batch, 1, engine)
      const b = find(arch, batch, 2, engine)
      if (!a || !b) continue
      const s = { arch, batch, engine, imagesPerSec1: a.imagesPerSec, imagesPerSec2: b.imagesPerSec, speedup: b.imagesPerSec / a.imagesPerSec }
      scaling.push(s)
      scalingRows.push([arch, engine, String(batch), a.imagesPerSec.toFixed(2), b.imagesPerSec.toFixed(2), x2(s.speedup)])
    }
  }
}
const scalingTable = scalingRows.length
  ? markdownTable(['model', 'engine', 'batch', 'images/s, 1 thread', 'images/s, 2 threads', '2-thread speedup'], scalingRows)
  : ''
const concurrencyTable = markdownTable(
  ['model', 'threads', 'calls', 'one after another', 'all at once', 'throughput ratio', 'results identical'],
  [[concurrency.arch, String(concurrency.threads), `${CONCURRENT} × batch 1`,
    `${concurrency.sequentialMs.toFixed(0)} ms (${concurrency.sequentialImagesPerSec.toFixed(1)} images/s)`,
    `${concurrency.concurrentMs.toFixed(0)} ms (${concurrency.concurrentImagesPerSec.toFixed(1)} images/s)`,
    x2(concurrency.throughputRatio), concurrency.identical ? 'yes' : 'NO']],
)

const loadEnd = os.loadavg()
const info = {
  ...machine(),
  simd: native.simdLevel(),
  onnxruntime: ort.env.versions?.node ?? 'unknown',
  quick,
  size: SIZE,
  seed: SEED,
  timing: TIMING,
  peakGflops: peaks,
  layerProbeGflops: probes,
  loadAverage: { start: loadStart, end: loadEnd },
  models: Object.fromEntries(ARCHS.map((a) => [a, { macsPerImage: models[a].macsPerImage, gflopPerImage: (2 * models[a].macsPerImage) / 1e9, numParams: models[a].numParams }])),
}
// Two free cores give ~2× the 1-thread peak; much less means a neighbour held a core
// during the run and every multi-thread number (and the scaling) understates.
const busy = peaks[1] && peaks[2] ? peaks[2] < 1.6 * peaks[1] : false
info.busy = busy
const peakText = Object.entries(peaks).map(([t, g]) => `${g.toFixed(0)} GFLOP/s on ${t} thread${t === '1' ? '' : 's'}`).join(', ')
const pctOf = (g, t) => (peaks[t] ? `${((100 * g) / peaks[t]).toFixed(0)}%` : '?')
const probeText = Object.entries(probes).map(([t, g]) => `${g.map((v) => v.toFixed(0)).join(' → ')} GFLOP/s on ${t} thread${t === '1' ? '' : 's'} (lowest ${pctOf(Math.min(...g), t)} of the peak)`).join(', ')
const contended = Object.entries(probes).filter(([t, g]) => peaks[t] && Math.min(...g) < PROBE_QUIET * peaks[t]).map(([t]) => t)
info.contended = contended.length > 0
const header = [
  `Whole models, ${SIZE}×${SIZE}, random weights (seed ${SEED}), ${info.cpu}, SIMD ${info.simd}, Node ${info.node}, onnxruntime-node ${info.onnxruntime}, ${info.date}${quick ? ' (QUICK: few rounds, indicative only)' : ''}.`,
  `GFLOP per image as 2 × multiply-adds counted from the program: ${ARCHS.map((a) => `${a} ${info.models[a].gflopPerImage.toFixed(2)}`).join(', ')}.`,
  `Peak FMA measured in this run: ${peakText}. Load average at start ${loadStart.map((l) => l.toFixed(2)).join(' ')}, at end ${loadEnd.map((l) => l.toFixed(2)).join(' ')}.`,
  `Cache-sensitive layer probe (1×1 conv 1024→256 @14×14, batch 1; before each batch size's timings → after the last): ${probeText}.`,
  ...(contended.length ? [`WARNING: the layer probe fell below ${PROBE_QUIET * 100}% of the FMA peak on ${contended.join(' and ')} thread(s) (quiet: ~80%): another workload shared the caches during the run; every row may understate and the ratios are scattered.`] : []),
  ...(busy ? [`WARNING: the 2-thread peak is only ${(peaks[2] / peaks[1]).toFixed(2)}× the 1-thread one: another process was using a core; 2-thread rows and scaling are not representative.`] : []),
  `Engines agree before timing: max |Δlogit| vs senet ${Math.max(0, ...agreement.map((a) => a.maxAbsDiff)).toExponential(1)} (limit ${AGREE}).`,
  `"speed vs onnxruntime" = onnxruntime median / engine median (> 1: faster); "SE overhead" = seresnet50 / resnet50 time, same engine.`,
].join('\n')
const targets = evaluateTargets([{ info, cells, scaling, concurrency }])
const targetTable = targetsTable(targets)
console.log(`${header}\n\n${mainTable}\n\nScaling (batch ${Math.max(...BATCHES)}):\n\n${scalingTable}\n\nConcurrency (${CONCURRENT} forward() calls on one model, batch 1):\n\n${concurrencyTable}\n\nTargets, this run alone (judge several runs with \`node bench/targets.mjs FILE...\`):\n\n${targetTable}`)

const file = writeJson(quick ? 'model-quick.json' : 'model.json', {
  info, cells, agreement, scaling, concurrency, targets,
  markdown: { header, mainTable, scalingTable, concurrencyTable, targetTable },
})
log(`wrote ${file}`)

if (chartPath) {
  const groups = []
  const series = [
    { name: 'senet (native)', engine: 'senet', color: '#1c7ed6', values: [] },
    { name: 'onnxruntime-node', engine: 'onnxruntime', color: '#f08c00', values: [] },
    ...(withJs ? [{ name: 'senet/js (pure JS)', engine: 'js', color: '#868e96', values: [] }] : []),
  ]
  for (const batch of BATCHES) {
    for (const threads of THREADS) {
      for (const arch of ARCHS) {
        groups.push({ label: `${arch} b${batch}`, sublabel: `${threads} thread${threads > 1 ? 's' : ''}` })
        for (const s of series) s.values.push(find(arch, batch, threads, s.engine)?.imagesPerSec ?? null)
      }
    }
  }
  const svg = groupedBarsSvg({
    title: `SE-ResNet-50 and ResNet-50 on CPU: images/s (higher is better)`,
    subtitle: [
      `${SIZE}×${SIZE}, same weights in every engine; ${info.cpu}, ${info.simd}, ${info.date.slice(0, 10)}`,
      `peak FMA ${peakText}`,
    ],
    yLabel: 'images / s',
    groups,
    series,
  })
  fs.writeFileSync(chartPath, svg)
  log(`wrote ${chartPath}`)
}

for (const m of Object.values(models)) {
  m.model.dispose()
  m.jsModel?.dispose()
}
