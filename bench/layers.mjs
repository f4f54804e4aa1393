// Per-layer comparison with onnxruntime, forward by forward: where does each engine
// spend its time, and does that change when the host gets busy?
//
//   node bench/layers.mjs [--arch seresnet50] [--batch 1] [--threads 1] [--pairs 20] [--gap 100]
//
// Runs senet and onnxruntime-node alternately (the order flips every pair, `--gap` ms of
// idle time before each call, default 100: onnxruntime's intra-op threads keep spinning
// for ~40 ms after each of its runs on 2 threads, and a senet forward started 20 ms
// after one ran 1.2× slower than one started 20 ms after a senet forward) on the same
// seeded model exported by `toOnnx`, with senet's per-op profile (`SENET_PROFILE=1`,
// read from a child process's stderr) and onnxruntime's node profiler
// (`enableProfiling`) on. The first two pairs are warm-up.
// With a batch, senet's per-image ops (summed over the images) are listed under the
// batch's shape, marked "per image": when several threads run images side by side, that
// sum is thread time (up to threads × the wall time), so compare those rows at 1 thread.
// Prints (1) per pair: both wall times and each engine's time by layer class, (2) the
// pairs split at the median senet time into its faster and slower half, with the median
// onnxruntime / senet time ratio of each, and (3) per convolution shape: the median time
// per instance in each engine and their ratio. Profiled times include one clock read
// per op (senet) or per node (onnxruntime); the wall times are what `bench:model`
// would see.
//
// senet fuses each SE-ResNet block's last 1×1 convolution with its SE, residual add and
// ReLU into one "se" op; onnxruntime runs that convolution as a Conv node (of the same
// shape as other 1×1 layers, e.g. the first block's downsample) followed by separate
// pooling, SE, Mul, Add, ReLU and layout-reorder nodes. The class table therefore puts
// senet's "se" ops beside onnxruntime's expanding-1×1 Conv nodes plus those separate
// nodes ("SE blocks"), and the shape table lists convolution shapes per instance (a
// shape that is also a fused block's convolution, such as 64→256 at 56×56, counts more
// instances in onnxruntime).
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { alternatePairs, intOption, markdownTable, median } from './common.mjs'

const require = createRequire(import.meta.url)
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const known = ['--arch', '--batch', '--threads', '--pairs', '--gap', '--child']
const unknown = args.filter((a) => a.startsWith('--') && !known.includes(a))
if (unknown.length) {
  console.error(`unknown option(s) ${unknown.join(', ')}; known: ${known.slice(0, -1).join(' ')}`)
  process.exit(2)
}
const ai = args.indexOf('--arch')
const arch = ai >= 0 && ai + 1 < args.length ? args[ai + 1] : 'seresnet50'
const batch = intOption(args, 'batch', 1)
const threads = intOption(args, 'threads', 1)
const pairs = intOption(args, 'pairs', 20) + 2
const gap = intOption(args, 'gap', 100, 0)

if (args.includes('--child')) {
  await child()
} else {
  await parent()
}

/** Runs the pairs with both profilers on; senet's profile goes to stderr. */
async function child() {
  const native = require(path.join(root, 'dist/index.js'))
  const addon = require(path.join(root, 'index.js'))
  const ort = require('onnxruntime-node')
  addon.setNumThreads(threads)
  const model = native.SEResNet.create(arch, { seed: 1 })
  const shape = [batch, 3, 224, 224]
  const x = new Float32Array(batch * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.37))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'senet-layers-'))
  const session = await ort.InferenceSession.create(model.toOnnx({ inputSize: [224, 224], batchSize: batch }), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    enableProfiling: true,
    profileFilePrefix: path.join(dir, 'ort'),
  })
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, shape) }
  const { ms } = await alternatePairs(
    async () => {
      process.stderr.write('\nSENET_FORWARD\n')
      await model.forward(x, shape)
    },
    () => session.run(feeds),
    { pairs, gapMs: gap },
  )
  session.endProfiling()
  const file = fs.readdirSync(dir).find((f) => f.startsWith('ort'))
  const nodes = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'))
  fs.rmSync(dir, { recursive: true, force: true })
  process.stdout.write(JSON.stringify({ wall: ms, nodes: nodes.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time')) }))
}

/** senet's per-op profile of one forward: [{ kind, key, ms }]. */
function parseSenet(text) {
  const ops = []
  for (const line of text.split('\n')) {
    const m = /^\s+([\d.]+) ms {2}(\w+) \[([\d,]+)\]->\[([\d,]+)\](?: (\d+)x\d+\/(\d+) p\d+ (\S+))?/.exec(line)
    if (!m) continue
    const [, ms, kind, from, to, k, s, algo] = m
    let cls = kind
    if (kind === 'conv') cls = algo.startsWith('wino') ? 'Winograd 3×3' : k === '1' ? 'direct 1×1' : 'direct k×k'
    else if (kind === 'se') cls = 'SE blocks'
    // With a batch, senet runs some layers image by image and its profile sums them
    // under the one-image shape: key them by the batch's shape, as onnxruntime's.
    const withBatch = (sh) => [batch, ...sh.split(',').slice(1)].join(',')
    const key = kind === 'conv' ? `conv [${withBatch(from)}]→[${withBatch(to)}] ${k}×${k}/${s}` : null
    const perImage = batch > 1 && from.split(',')[0] === '1'
    ops.push({ cls, key, ms: Number(ms), perImage })
  }
  return ops
}

/** onnxruntime's nodes of one run: [{ cls, key, ms }]. */
function parseOrt(run) {
  return run.map((e) => {
    const a = e.args
    const shapeOf = (t) => Object.values(t)[0]
    const xs = shapeOf(a.input_type_shape[0])
    const ys = shapeOf(a.output_type_shape[0])
    const ms = e.dur / 1000
    if (a.op_name !== 'Conv') {
      const se = ['Mul', 'Add', 'Relu', 'GlobalAveragePool', 'ReorderInput', 'ReorderOutput', 'Sigmoid'].includes(a.op_name)
      return { cls: se ? 'SE blocks' : 'other', key: null, ms }
    }
    const w = shapeOf(a.input_type_shape[1])
    if (xs[2] === 1 && xs[3] === 1) return { cls: 'SE blocks', key: null, ms } // the SE's FC layers
    const s = Math.round(xs[2] / ys[2])
    const key = `conv [${xs.join(',')}]→[${ys.join(',')}] ${w[2]}×${w[3]}/${s}`
    // A bottleneck's expanding 1×1 (out = 4 × in, stride 1) is the convolution senet fuses
    // into its SE op; in resnet50 it is a plain conv.
    const expanding = w[2] === 1 && s === 1 && ys[1] === 4 * xs[1]
    return { cls: expanding && arch.startsWith('se') ? 'SE blocks' : w[2] === 1 ? 'direct 1×1' : 'direct k×k', key, ms }
  })
}

async function parent() {
  const out = []
  let err = ''
  const code = await new Promise((resolve) => {
    const p = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args, '--child'], {
      env: { ...process.env, SENET_PROFILE: '1', SENET_PROFILE_ALL: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    p.stdout.on('data', (d) => out.push(d))
    p.stderr.on('data', (d) => (err += d))
    p.on('close', resolve)
  })
  if (code !== 0) {
    console.error(err)
    process.exit(1)
  }
  const { wall, nodes } = JSON.parse(Buffer.concat(out).toString())
  const senetRuns = err.split('SENET_FORWARD').slice(1).map(parseSenet)
  // onnxruntime's profile: one run per session.run; a run starts at its first node's name.
  const ortRuns = []
  for (const e of nodes) {
    if (e.name === nodes[0].name) ortRuns.push([])
    ortRuns[ortRuns.length - 1].push(e)
  }
  if (senetRuns.length !== pairs || ortRuns.length < pairs) {
    console.error(`expected ${pairs} profiled forwards per engine, got ${senetRuns.length} (senet) and ${ortRuns.length} (onnxruntime)`)
    process.exit(1)
  }
  // The first two pairs are warm-up (both profilers saw them).
  const sRuns = senetRuns.slice(-pairs).slice(2)
  const oRuns = ortRuns.slice(-pairs).slice(2).map(parseOrt)
  const [sWall, oWall] = [wall[0].slice(2), wall[1].slice(2)]
  const classes = ['direct 1×1', 'direct k×k', 'Winograd 3×3', 'SE blocks', 'other']
  const byClass = (ops) => {
    const t = Object.fromEntries(classes.map((c) => [c, 0]))
    for (const o of ops) t[classes.includes(o.cls) ? o.cls : 'other'] += o.ms
    return t
  }
  const sCls = sRuns.map(byClass)
  const oCls = oRuns.map(byClass)
  const f1 = (v) => v.toFixed(1)

  console.log(`${arch}, batch ${batch}, ${threads} thread(s), ${sWall.length} alternated pairs (after 2 warm-up pairs), ${os.cpus()[0].model.trim()}\n`)
  if (batch > 1 && threads > 1) {
    console.log(`NOTE: senet ops marked "per image" are summed over images that ${threads} threads run side by side: thread time, up to ${threads}× their wall time; the class sums include them.\n`)
  }
  console.log('Per pair (ms): wall time, then the profiled time by layer class (senet, onnxruntime)\n')
  console.log(
    markdownTable(
      ['pair', 'senet wall', 'onnxruntime wall', ...classes.map((c) => `${c} (senet, ort)`)],
      sWall.map((s, i) => [String(i + 1), f1(s), f1(oWall[i]), ...classes.map((c) => `${f1(sCls[i][c])}, ${f1(oCls[i][c])}`)]),
    ),
  )
  const cut = median(sWall)
  const half = (pred) => {
    const idx = sWall.map((s, i) => i).filter((i) => pred(sWall[i]))
    const m = (f) => median(idx.map(f))
    return [String(idx.length), f1(m((i) => sWall[i])), f1(m((i) => oWall[i])), `${m((i) => oWall[i] / sWall[i]).toFixed(2)}×`, ...classes.map((c) => `${f1(m((i) => sCls[i][c]))}, ${f1(m((i) => oCls[i][c]))}`)]
  }
  console.log(`\nPairs split at senet's median wall time (${f1(cut)} ms); medians per half; "ort / senet" > 1: senet faster\n`)
  console.log(
    markdownTable(
      ['half', 'pairs', 'senet wall', 'onnxruntime wall', 'ort / senet', ...classes.map((c) => `${c} (senet, ort)`)],
      [
        ['senet faster half', ...half((s) => s <= cut)],
        ['senet slower half', ...half((s) => s > cut)],
      ],
    ),
  )
  // Per convolution shape: median over pairs of (sum of that shape's ops / their count).
  const perShape = (runs) => {
    const m = new Map()
    for (const ops of runs) {
      const sums = new Map()
      for (const o of ops) {
        if (!o.key) continue
        const [t, n] = sums.get(o.key) ?? [0, 0]
        sums.set(o.key, [t + o.ms, n + 1])
      }
      for (const [k, [t, n]] of sums) {
        if (!m.has(k)) m.set(k, { n, v: [] })
        m.get(k).v.push(t / n)
      }
    }
    return m
  }
  const sShape = perShape(sRuns)
  const oShape = perShape(oRuns)
  const rows = [...sShape.entries()]
    .map(([k, s]) => {
      const o = oShape.get(k)
      const [sm, om] = [median(s.v), o ? median(o.v) : NaN]
      return { k, s, o, sm, om }
    })
    .sort((a, b) => b.sm * b.s.n - a.sm * a.s.n)
  console.log('\nConvolutions by shape (those inside senet\'s fused SE ops are not listed): median ms per instance\n')
  console.log(
    markdownTable(
      ['shape', 'senet algorithm', 'instances (senet / ort)', 'senet ms', 'onnxruntime ms', 'senet / ort time'],
      rows.map(({ k, s, o, sm, om }) => {
        const algo = sRuns[0].find((op) => op.key === k)?.cls ?? ''
        const perImage = sRuns[0].some((op) => op.key === k && op.perImage)
        return [k, algo + (perImage ? ' (per image)' : ''), `${s.n} / ${o ? o.n : 0}`, sm.toFixed(3), Number.isNaN(om) ? '–' : om.toFixed(3), Number.isNaN(om) ? '–' : `${(sm / om).toFixed(2)}×`]
      }),
    ),
  )
}
