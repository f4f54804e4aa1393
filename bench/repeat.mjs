// Repeated whole-model benchmark runs, judged together.
//
//   node bench/repeat.mjs [--runs N] [--dir DIR] [-- OPTIONS FOR bench/model.mjs]
//   npm run bench:repeat -- --runs 6
//
// On a shared machine one `bench:model` run says little (its ratios move by ±5% with the
// other tenants' load). This runs `bench/model.mjs` N times (default 6), one after
// another, each in a fresh process; saves each run's JSON as DIR/run-<i>.json and its
// chart as DIR/run-<i>.svg (DIR default: bench/results/runs-<date>; the committed
// bench/model-chart.svg is left alone unless `--chart` is passed through), then prints
// the verdicts on issue #4's targets over all runs (`bench/targets.mjs`): every run's
// value, the medians, and how many runs met each target.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { evaluateTargets, targetsTable } from './targets.mjs'
import { intOption } from './common.mjs'

const here = path.dirname(new URL(import.meta.url).pathname)
const argv = process.argv.slice(2)
const sep = argv.indexOf('--')
const own = sep < 0 ? argv : argv.slice(0, sep)
const pass = sep < 0 ? [] : argv.slice(sep + 1)
for (let i = 0; i < own.length; i++) {
  if (own[i] === '--runs' || own[i] === '--dir') i++
  else {
    console.error(`bench/repeat.mjs: unknown option ${own[i]} (bench/model.mjs options go after --)`)
    process.exit(2)
  }
}
const runs = intOption(own, 'runs', 6, 1)
const dir = path.resolve(own.includes('--dir') ? own[own.indexOf('--dir') + 1] : path.join(here, 'results', `runs-${new Date().toISOString().replace(/[:.]/g, '-')}`))
fs.mkdirSync(dir, { recursive: true })
const quick = pass.includes('--quick')
const resultFile = path.join(here, 'results', quick ? 'model-quick.json' : 'model.json')

const results = []
for (let i = 1; i <= runs; i++) {
  const chart = pass.includes('--chart') ? [] : ['--chart', path.join(dir, `run-${i}.svg`)]
  console.error(`run ${i} of ${runs}: node bench/model.mjs ${[...pass, ...chart].join(' ')}`)
  fs.rmSync(resultFile, { force: true })
  const r = spawnSync(process.execPath, [path.join(here, 'model.mjs'), ...pass, ...chart], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' })
  if (r.status !== 0) {
    console.error(`bench/repeat.mjs: run ${i} failed (exit ${r.status ?? r.signal}); ${results.length} run(s) saved in ${dir}`)
    process.exit(1)
  }
  const file = path.join(dir, `run-${i}.json`)
  fs.copyFileSync(resultFile, file)
  fs.writeFileSync(path.join(dir, `run-${i}.md`), r.stdout)
  results.push(JSON.parse(fs.readFileSync(file, 'utf8')))
}

const contended = results.filter((r) => r.info?.contended || r.info?.busy).length
console.log(`${runs} runs of bench/model.mjs${pass.length ? ` ${pass.join(' ')}` : ''}, saved in ${dir} (run-<i>.json, .md, .svg)${contended ? `; ${contended} flagged as contended or busy` : ''}.\n`)
console.log(targetsTable(evaluateTargets(results)))
const shown = path.relative(process.cwd(), dir).startsWith('..') ? dir : path.relative(process.cwd(), dir)
console.log(`\nJudge these together with other saved runs: node bench/targets.mjs ${shown}/run-*.json OTHER.json ...`)
