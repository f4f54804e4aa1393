// A/B of two builds of this package in one process: the same seeded model from each,
// forwards alternated in pairs (the order flips every round, with an idle gap before
// each call), so that a noisy host slows both builds alike. For changes too small for
// `bench:model` to resolve on a shared machine.
//
//   node bench/ab.mjs DIR_A DIR_B [--arch seresnet50] [--batch 1] [--threads 2] [--pairs 30] [--gap 20]
//
// DIR_A / DIR_B: package directories, each built (`npm run build`), e.g. a
// `git worktree` of an earlier commit and this checkout. Each build loads its own addon
// (its own thread pool, resized to --threads). Prints each build's median ms, the median
// of the per-pair ratios B/A (< 1: B faster) and max |Δlogit| between the builds on the
// same input (0 when a change keeps every result bit). Run it both ways (A B, then
// B A): on the shared AVX2 host the build loaded second was favoured by 2–4% in some
// sessions (each addon has its own pinned pool and its own copy of the weights), so a
// single order can show a difference that swapping the roles reverses.
import { createRequire } from 'node:module'
import path from 'node:path'
import { alternatePairs, intOption, median } from './common.mjs'

const require = createRequire(import.meta.url)
const args = process.argv.slice(2)
const dirs = args.filter((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')))
if (dirs.length !== 2) {
  console.error('usage: node bench/ab.mjs DIR_A DIR_B [--arch A] [--batch N] [--threads T] [--pairs P] [--gap MS]')
  process.exit(2)
}
const known = ['--arch', '--batch', '--threads', '--pairs', '--gap']
const unknown = args.filter((a) => a.startsWith('--') && !known.includes(a))
if (unknown.length) {
  console.error(`unknown option(s) ${unknown.join(', ')}; known: ${known.join(' ')}`)
  process.exit(2)
}
const ai = args.indexOf('--arch')
const arch = ai >= 0 && ai + 1 < args.length ? args[ai + 1] : 'seresnet50'
const batch = intOption(args, 'batch', 1)
const threads = intOption(args, 'threads', 2)
const pairs = intOption(args, 'pairs', 30)
const gap = intOption(args, 'gap', 20, 0)

const builds = dirs.map((d) => {
  const dir = path.resolve(d)
  return { dir, native: require(path.join(dir, 'dist/index.js')), addon: require(path.join(dir, 'index.js')) }
})
for (const b of builds) b.addon.setNumThreads(threads)
const models = builds.map((b) => b.native.SEResNet.create(arch, { seed: 1 }))
const shape = [batch, 3, 224, 224]
const x = new Float32Array(batch * 3 * 224 * 224).map((_, i) => Math.sin(i * 0.37))
const outs = []
for (const m of models) outs.push(await m.forward(x, shape))
let maxDiff = 0
for (let i = 0; i < outs[0].length; i++) maxDiff = Math.max(maxDiff, Math.abs(outs[0][i] - outs[1][i]))
for (let i = 0; i < 2; i++) for (const m of models) await m.forward(x, shape)

const { ms, ratios } = await alternatePairs(() => models[0].forward(x, shape), () => models[1].forward(x, shape), { pairs, gapMs: gap })
console.log(
  `${arch} batch ${batch}, ${threads} thread(s), ${pairs} pairs: A ${median(ms[0]).toFixed(2)} ms, B ${median(ms[1]).toFixed(2)} ms, ` +
    `median B/A ${median(ratios).toFixed(3)}, max |Δlogit| ${maxDiff.toExponential(2)}\n  A = ${builds[0].dir}\n  B = ${builds[1].dir}`,
)
