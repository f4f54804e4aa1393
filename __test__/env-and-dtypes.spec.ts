/**
 * Start-up configuration through the environment (SENET_SIMD, SENET_NUM_THREADS: read
 * once per process, so each case runs in a child process), and models loaded from F16
 * and BF16 weight files.
 */
import test from 'ava'
import { execFileSync } from 'child_process'
import { readFileSync } from 'fs'
import { join } from 'path'

import * as native from '../lib/index'
import * as js from '../lib/js/index'
import { parseSafetensors, writeSafetensors, type SafetensorsInput } from '../lib/model/safetensors'
import type { SEResNetConfig } from '../lib/model/config'

function childReport(env: Record<string, string>): { level: string; threads: number } {
  const code = "const s=require('./index.js');process.stdout.write(JSON.stringify({level:s.simdLevel(),threads:s.getNumThreads()}))"
  const out = execFileSync(process.execPath, ['-e', code], { cwd: join(__dirname, '..'), encoding: 'utf8', env: { ...process.env, ...env } })
  return JSON.parse(out) as { level: string; threads: number }
}

test('SENET_SIMD lowers the SIMD level at start-up; unknown or unsupported values fall back to the best', (t) => {
  const levels = native.supportedSimdLevels()
  const best = levels[levels.length - 1]
  for (const l of levels) t.is(childReport({ SENET_SIMD: l }).level, l)
  t.is(childReport({ SENET_SIMD: 'bogus' }).level, best)
  const unsupported = ['neon', 'avx2', 'avx512'].find((l) => !(levels as string[]).includes(l))
  if (unsupported) t.is(childReport({ SENET_SIMD: unsupported }).level, best)
})

test('SENET_NUM_THREADS sizes the pool at start-up', (t) => {
  t.is(childReport({ SENET_NUM_THREADS: '3' }).threads, 3)
  t.is(childReport({ SENET_NUM_THREADS: '1' }).threads, 1)
})

// --- F16 / BF16 weights ------------------------------------------------------------

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 → IEEE half bits, round to nearest even (finite, in-range inputs). */
function toF16Bits(v: number): number {
  f32[0] = v
  const x = u32[0]
  const sign = (x >>> 16) & 0x8000
  const exp = ((x >>> 23) & 0xff) - 127 + 15
  let mant = x & 0x7fffff
  if (exp >= 31) return sign | 0x7c00
  if (exp <= 0) {
    if (exp < -10) return sign
    mant |= 0x800000
    const shift = 14 - exp
    const half = 1 << (shift - 1)
    const rest = mant & ((1 << shift) - 1)
    let m = mant >>> shift
    if (rest > half || (rest === half && (m & 1))) m++
    return sign | m
  }
  let h = sign | (exp << 10) | (mant >>> 13)
  const rest = mant & 0x1fff
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++
  return h
}

function fromF16Bits(h: number): number {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >>> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0) return s * m * 2 ** -24
  return s * (1 + m / 1024) * 2 ** (e - 15)
}

/** float32 → bfloat16 bits, round to nearest even. */
function toBF16Bits(v: number): number {
  f32[0] = v
  const x = u32[0]
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
}

function fromBF16Bits(b: number): number {
  u32[0] = b << 16
  return f32[0]
}

/** Re-encodes every tensor of a F32 file as `dtype`, and as F32 holding the rounded values. */
function reencode(bytes: Uint8Array, dtype: 'F16' | 'BF16'): { low: Uint8Array; rounded: Uint8Array } {
  const file = parseSafetensors(bytes)
  const low: Record<string, SafetensorsInput> = {}
  const rounded: Record<string, SafetensorsInput> = {}
  for (const name of file.names()) {
    const data = file.getF32(name)
    const shape = file.info(name).shape
    const bits = new Uint16Array(data.length)
    const back = new Float32Array(data.length)
    for (let i = 0; i < data.length; i++) {
      bits[i] = dtype === 'F16' ? toF16Bits(data[i]) : toBF16Bits(data[i])
      back[i] = dtype === 'F16' ? fromF16Bits(bits[i]) : fromBF16Bits(bits[i])
    }
    low[name] = { dtype, shape, bytes: new Uint8Array(bits.buffer) }
    rounded[name] = { dtype: 'F32', shape, data: back }
  }
  return { low: writeSafetensors(low), rounded: writeSafetensors(rounded) }
}

const FIXTURES = join(__dirname, 'fixtures', 'models')

for (const dtype of ['F16', 'BF16'] as const) {
  for (const [name, lib] of [['native', native], ['js', js]] as const) {
    test(`${name}: a model loads from ${dtype} weights exactly as from their float32 values`, async (t) => {
      const fx = JSON.parse(readFileSync(join(FIXTURES, 'tiny_seresnet_bottleneck.json'), 'utf8')) as { config: SEResNetConfig }
      const { low, rounded } = reencode(readFileSync(join(FIXTURES, 'tiny_seresnet_bottleneck.safetensors')), dtype)
      const a = await lib.SEResNet.fromSafetensors(fx.config, low)
      const b = await lib.SEResNet.fromSafetensors(fx.config, rounded)
      const x = new Float32Array(2 * 3 * 64 * 64).map((_, i) => Math.sin(i * 0.37))
      // Same float32 weights after conversion, same executor: bitwise equal logits.
      t.deepEqual(a.forwardSync(x, [2, 3, 64, 64]), b.forwardSync(x, [2, 3, 64, 64]))
      a.dispose()
      b.dispose()
    })
  }
}
