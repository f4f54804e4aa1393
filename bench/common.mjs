// Shared benchmark helpers: timing, medians, tables, machine facts.
import os from 'node:os'
import fs from 'node:fs'
import path from 'node:path'

/** Median of numbers. */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Milliseconds per call of (sync or async) `fn`, over `inner` back-to-back calls. */
export async function timeOnce(fn, inner = 1) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < inner; i++) {
    const r = fn()
    if (r && typeof r.then === 'function') await r
  }
  return Number(process.hrtime.bigint() - t0) / 1e6 / inner
}

/**
 * Interleaved timing: every round runs each engine once, in a rotating order, so that
 * a noisy neighbour slows all engines alike. Each engine gets `warmup` untimed runs, then
 * rounds continue until `minRounds` are done and `budgetMs` is spent (slow engines stop
 * early after `minRoundsSlow`). An engine may set its own `warmup` count (e.g. 0 for one
 * that takes seconds per call). Returns { name: [ms...] }.
 */
export async function interleave(engines, { warmup = 2, minRounds = 15, maxRounds = 60, budgetMs = 4000, minRoundsSlow = 3, slowMs = 200, gapMs = 0, inner = 1 } = {}) {
  const samples = Object.fromEntries(engines.map((e) => [e.name, []]))
  // `gapMs`: idle time before each timed run. Thread pools keep spinning for a while
  // after their work (onnxruntime's by default, rayon's briefly); without a gap, the
  // engine timed next shares the cores with the previous engine's spinning threads.
  const gap = () => (gapMs > 0 ? new Promise((r) => setTimeout(r, gapMs)) : null)
  for (const e of engines) for (let i = 0; i < (e.warmup ?? warmup); i++) await timeOnce(e.run)
  const t0 = Date.now()
  for (let round = 0; round < maxRounds; round++) {
    const order = engines.map((_, i) => engines[(i + round) % engines.length])
    for (const e of order) {
      const s = samples[e.name]
      const slow = s.length >= minRoundsSlow && median(s) > slowMs
      if (slow && round >= minRoundsSlow) continue
      await gap()
      s.push(await timeOnce(e.run, e.inner ?? inner))
    }
    if (round + 1 >= minRounds && Date.now() - t0 > budgetMs) break
  }
  return samples
}

/**
 * A/B in pairs: each round times `runA` and `runB` once (ms, via timeOnce), the order
 * flipped every round, with `gapMs` of idle time before each call, so that a noisy host
 * slows both alike. Returns { ms: [a[], b[]], ratios: b/a per round }.
 */
export async function alternatePairs(runA, runB, { pairs = 30, gapMs = 20 } = {}) {
  const runs = [runA, runB]
  const ms = [[], []]
  const ratios = []
  for (let r = 0; r < pairs; r++) {
    const pair = [0, 0]
    for (const j of r % 2 ? [1, 0] : [0, 1]) {
      if (gapMs > 0) await new Promise((res) => setTimeout(res, gapMs))
      pair[j] = await timeOnce(runs[j])
    }
    ms[0].push(pair[0])
    ms[1].push(pair[1])
    ratios.push(pair[1] / pair[0])
  }
  return { ms, ratios }
}

/**
 * Integer command-line option `--name N` from `args` (`dflt` when absent); exits with a
 * message when it is not a safe integer ≥ `min`.
 */
export function intOption(args, name, dflt, min = 1) {
  const i = args.indexOf(`--${name}`)
  const raw = i >= 0 && i + 1 < args.length ? args[i + 1] : dflt
  const v = Number(raw)
  if (!Number.isSafeInteger(v) || v < min) {
    console.error(`--${name} must be an integer >= ${min}, got ${raw}`)
    process.exit(2)
  }
  return v
}

/** Markdown table from a header row and rows of cells. */
export function markdownTable(header, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n')
}

export function machine() {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    node: process.version,
    date: new Date().toISOString(),
  }
}

export function writeJson(name, data) {
  const dir = path.join(path.dirname(new URL(import.meta.url).pathname), 'results')
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, name)
  fs.writeFileSync(file, JSON.stringify(data, null, 2))
  return file
}

/** Deterministic pseudo-random floats in [-1, 1). */
export function randomF32(len, seed = 1) {
  const a = new Float32Array(len)
  let s = seed >>> 0 || 1
  for (let i = 0; i < len; i++) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    a[i] = (s / 4294967296) * 2 - 1
  }
  return a
}
