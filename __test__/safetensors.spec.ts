import test, { type ExecutionContext } from 'ava'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'

import {
  MAX_HEADER_LENGTH,
  parseSafetensors,
  readSafetensors,
  writeSafetensors,
} from '../lib/model/safetensors'

// ---------------------------------------------------------------------- helpers

/** Builds a file from a raw header (object → JSON, or literal string/bytes) and data. */
function build(
  header: unknown,
  data: Uint8Array | number = 0,
  opts: { headerLength?: bigint; raw?: boolean } = {},
): Uint8Array {
  const h =
    header instanceof Uint8Array
      ? header
      : new TextEncoder().encode(typeof header === 'string' && opts.raw ? header : JSON.stringify(header))
  const d = typeof data === 'number' ? new Uint8Array(data) : data
  const out = new Uint8Array(8 + h.length + d.length)
  new DataView(out.buffer).setBigUint64(0, opts.headerLength ?? BigInt(h.length), true)
  out.set(h, 8)
  out.set(d, 8 + h.length)
  return out
}

const u16le = (vals: number[]): Uint8Array => {
  const b = new Uint8Array(vals.length * 2)
  vals.forEach((v, i) => {
    b[2 * i] = v & 0xff
    b[2 * i + 1] = v >>> 8
  })
  return b
}

const f32bits = (a: Float32Array): number[] => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length))
const bitsOf = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0]

function throwsWith(
  t: ExecutionContext,
  fn: () => unknown,
  type: typeof TypeError | typeof RangeError,
  ...fragments: string[]
): void {
  const err = t.throws(fn, { instanceOf: type })
  for (const f of fragments) t.true(err?.message.includes(f), `"${err?.message}" should mention "${f}"`)
}

const ok = (dtype: string, shape: number[], begin: number, end: number) => ({
  dtype,
  shape,
  data_offsets: [begin, end],
})

// ---------------------------------------------------------------------- round trip

test('write → parse round trip, metadata, scalar and empty tensors', (t) => {
  const w = Float32Array.from({ length: 2 * 3 * 4 }, (_, i) => i * 0.5 - 3)
  const bytes = writeSafetensors(
    {
      'layer1.0.conv1.weight': { dtype: 'F32', shape: [2, 3, 4], data: w },
      scalar: { dtype: 'F32', shape: [], data: new Float32Array([Math.PI]) },
      empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
      ['__proto__']: { dtype: 'F32', shape: [1], data: new Float32Array([7]) },
    },
    { format: 'pt', note: 'héllo ✓' },
  )
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true))
  t.is((8 + n) % 8, 0, 'data section is 8-byte aligned')
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n))
  t.true(headerText.startsWith('{"__metadata__"'))
  t.regex(headerText, /} *$/)

  const f = parseSafetensors(bytes)
  t.deepEqual(f.metadata, { format: 'pt', note: 'héllo ✓' })
  t.deepEqual(f.names(), ['__proto__', 'empty', 'layer1.0.conv1.weight', 'scalar'])
  t.true(f.has('scalar'))
  t.false(f.has('__metadata__'))
  t.false(f.has('nope'))
  t.deepEqual(f.info('layer1.0.conv1.weight'), { dtype: 'F32', shape: [2, 3, 4], byteLength: 96 })
  t.deepEqual(f.info('empty'), { dtype: 'F32', shape: [0, 5], byteLength: 0 })
  t.deepEqual(Array.from(f.getF32('layer1.0.conv1.weight')), Array.from(w))
  t.deepEqual(Array.from(f.getF32('scalar')), [Math.fround(Math.PI)])
  t.is(f.getF32('empty').length, 0)
  t.deepEqual(Array.from(f.getF32('__proto__')), [7])
  throwsWith(t, () => f.getF32('nope'), RangeError, 'no tensor named "nope"')
  throwsWith(t, () => f.info('nope'), RangeError, 'nope')
})

test('no metadata gives an empty map', (t) => {
  const f = parseSafetensors(writeSafetensors({ a: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } }))
  t.deepEqual({ ...f.metadata }, {})
  t.deepEqual(f.names(), ['a'])
})

test('results never alias the file bytes; mutations do not leak either way', (t) => {
  const bytes = writeSafetensors({ a: { dtype: 'F32', shape: [3], data: new Float32Array([1, 2, 3]) } })
  const f = parseSafetensors(bytes)
  const a1 = f.getF32('a')
  a1[0] = 99
  t.deepEqual(Array.from(f.getF32('a')), [1, 2, 3])
  bytes.fill(0, bytes.length - 12) // zero the data section after the fact
  t.deepEqual(Array.from(a1), [99, 2, 3])
  t.deepEqual(Array.from(f.getF32('a')), [0, 0, 0], 'documented: the file keeps a reference to the bytes')
})

test('unaligned data: F32/F64 at odd offsets, and a Buffer at an odd byteOffset', (t) => {
  const vals = [1.5, -2.25, 3e-41, Infinity]
  const f32 = new Uint8Array(new Float32Array(vals).buffer)
  const f64 = new Uint8Array(new Float64Array([0.1, -1e300]).buffer)
  const data = new Uint8Array(1 + 16 + 3 + 16)
  data.set(f32, 1)
  data.set(f64, 20)
  const file = build({ x: ok('F32', [2, 2], 1, 17), d: ok('F64', [2], 20, 36) }, data)
  const backing = new Uint8Array(file.length + 3)
  backing.set(file, 3)
  for (const bytes of [file, backing.subarray(3), Buffer.from(backing.buffer, 3, file.length)]) {
    const f = parseSafetensors(bytes)
    t.deepEqual(f32bits(f.getF32('x')), vals.map(bitsOf))
    t.deepEqual(Array.from(f.getF32('d')), [Math.fround(0.1), -Infinity])
  }
})

// ---------------------------------------------------------------------- conversions

test('F16 → F32 exact on known values (subnormal, ±inf, nan, -0)', (t) => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x8000, -0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0xfbff, -65504],
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x0200, 2 ** -15],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ]
  const nans = [0x7e00, 0x7c01, 0xfe00, 0x7fff]
  const file = build({ h: ok('F16', [cases.length + nans.length], 0, 2 * (cases.length + nans.length)) }, u16le([...cases.map((c) => c[0]), ...nans]))
  const out = parseSafetensors(file).getF32('h')
  cases.forEach(([h, v], i) => t.true(Object.is(out[i], v), `f16 0x${h.toString(16)} → ${out[i]}, want ${v}`))
  for (let i = 0; i < nans.length; i++) t.true(Number.isNaN(out[cases.length + i]))
  // NaN payload and sign kept bit-exactly (as F16C/vcvtph2ps and torch do).
  t.is(f32bits(out)[cases.length], 0x7fc00000)
  t.is(f32bits(out)[cases.length + 2], 0xffc00000)
})

test('F16 → F32 exhaustive against a float formula', (t) => {
  const all = Array.from({ length: 65536 }, (_, i) => i)
  const out = parseSafetensors(build({ h: ok('F16', [65536], 0, 131072) }, u16le(all))).getF32('h')
  let bad = 0
  for (const h of all) {
    const s = h & 0x8000 ? -1 : 1
    const e = (h >> 10) & 31
    const m = h & 1023
    const want = e === 31 ? (m ? NaN : s * Infinity) : e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15)
    if (!Object.is(out[h], want)) bad++
  }
  t.is(bad, 0)
})

test('BF16 → F32 by shifting (subnormal, ±inf, nan, -0)', (t) => {
  const hs = [0x0000, 0x8000, 0x3f80, 0xc049, 0x0001, 0x807f, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0xffc1]
  const out = parseSafetensors(build({ b: ok('BF16', [hs.length], 0, hs.length * 2) }, u16le(hs))).getF32('b')
  t.deepEqual(f32bits(out), hs.map((h) => (h << 16) >>> 0))
  t.true(Object.is(out[1], -0))
  t.is(out[2], 1)
  t.is(out[3], -3.140625)
  t.is(out[4], 2 ** -133)
  t.is(out[7], Infinity)
  t.is(out[8], -Infinity)
  t.true(Number.isNaN(out[9]))
})

test('non-float dtypes are listed, getF32 throws naming tensor and dtype; getBytes works', (t) => {
  const data = new Uint8Array(8 + 3)
  data[0] = 42
  data.set([1, 0, 1], 8)
  const f = parseSafetensors(build({ i: ok('I64', [1], 0, 8), flags: ok('BOOL', [3], 8, 11), e: ok('U8', [0], 11, 11) }, data))
  t.deepEqual(f.names(), ['e', 'flags', 'i'])
  t.deepEqual(f.info('i'), { dtype: 'I64', shape: [1], byteLength: 8 })
  throwsWith(t, () => f.getF32('i'), TypeError, '"i"', 'I64')
  throwsWith(t, () => f.getF32('flags'), TypeError, '"flags"', 'BOOL')
  t.deepEqual(Array.from(f.getBytes('flags')), [1, 0, 1])
  t.is(f.getBytes('i')[0], 42)
})

// ---------------------------------------------------------------------- malformed

test('malformed: prefix and header', (t) => {
  throwsWith(t, () => parseSafetensors(new Uint8Array(0)), RangeError, '0 bytes', 'shorter than the 8-byte')
  throwsWith(t, () => parseSafetensors(new Uint8Array(7)), RangeError, '7 bytes')
  throwsWith(t, () => parseSafetensors(build({}, 0, { headerLength: 1000n })), RangeError, 'header length 1000', 'exceeds the 2 bytes', 'truncated')
  throwsWith(t, () => parseSafetensors(build({}, 0, { headerLength: 2n ** 63n })), RangeError, `${2n ** 63n}`, `${MAX_HEADER_LENGTH}-byte cap`)
  throwsWith(t, () => parseSafetensors(build({}, 0, { headerLength: 2n ** 64n - 1n })), RangeError, 'cap')
  throwsWith(t, () => parseSafetensors(build({}, 0, { headerLength: BigInt(MAX_HEADER_LENGTH + 1) })), RangeError, 'cap')
  throwsWith(t, () => parseSafetensors(build(new Uint8Array([0x7b, 0xff, 0x7d]))), TypeError, 'not valid UTF-8')
  throwsWith(t, () => parseSafetensors(build(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]))), TypeError, 'not valid JSON')
  throwsWith(t, () => parseSafetensors(build('{"a":', 0, { raw: true })), TypeError, 'not valid JSON')
  throwsWith(t, () => parseSafetensors(build('', 0, { raw: true })), TypeError, 'not valid JSON')
  throwsWith(t, () => parseSafetensors(build([])), TypeError, 'must be a JSON object', 'an array')
  throwsWith(t, () => parseSafetensors(build(null)), TypeError, 'must be a JSON object', 'null')
  throwsWith(t, () => parseSafetensors(build(3)), TypeError, 'number 3')
  throwsWith(t, () => parseSafetensors(build({ __metadata__: [] })), TypeError, '__metadata__')
  throwsWith(t, () => parseSafetensors(build({ __metadata__: { k: 1 } })), TypeError, '__metadata__ "k"', 'number 1')
  t.deepEqual({ ...parseSafetensors(build({ __metadata__: null })).metadata }, {})
  t.deepEqual(parseSafetensors(build({})).names(), [])
})

test('malformed: entry fields and types', (t) => {
  const p = (entry: unknown, data: number = 16) => () => parseSafetensors(build({ w: entry }, data))
  throwsWith(t, p(5), TypeError, 'tensor "w"', 'entry must be an object', 'number 5')
  throwsWith(t, p([]), TypeError, 'tensor "w"', 'an array')
  throwsWith(t, p({ shape: [1], data_offsets: [0, 4] }), TypeError, 'tensor "w"', 'missing "dtype"')
  throwsWith(t, p({ dtype: 'F32', data_offsets: [0, 4] }), TypeError, 'missing "shape"')
  throwsWith(t, p({ dtype: 'F32', shape: [1] }), TypeError, 'missing "data_offsets"')
  throwsWith(t, p({ dtype: 7, shape: [1], data_offsets: [0, 4] }), TypeError, 'dtype must be a string', 'number 7')
  throwsWith(t, p(ok('F31', [1], 0, 4)), TypeError, 'tensor "w"', 'unknown dtype "F31"', 'F32')
  throwsWith(t, p(ok('constructor', [1], 0, 4)), TypeError, 'unknown dtype "constructor"')
  throwsWith(t, p({ dtype: 'F32', shape: 4, data_offsets: [0, 4] }), TypeError, 'shape must be an array', 'number 4')
  throwsWith(t, p({ dtype: 'F32', shape: ['1'], data_offsets: [0, 4] }), TypeError, 'shape[0] must be a number', 'string "1"')
  throwsWith(t, p(ok('F32', [2, -1], 0, 4)), RangeError, 'shape[1]', 'non-negative safe integer', '-1')
  throwsWith(t, p(ok('F32', [1.5], 0, 4)), RangeError, 'shape[0]', '1.5')
  throwsWith(t, p(ok('F32', [2 ** 53], 0, 4)), RangeError, 'shape[0]', `${2 ** 53}`)
  throwsWith(t, () => parseSafetensors(build('{"w":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}}', 16, { raw: true })), RangeError, 'shape[0]', 'Infinity')
  throwsWith(t, p({ dtype: 'F32', shape: [1], data_offsets: 0 }), TypeError, 'data_offsets must be an array')
  throwsWith(t, p({ dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] }), TypeError, 'length 3')
  throwsWith(t, p({ dtype: 'F32', shape: [1], data_offsets: [null, 4] }), TypeError, 'begin must be a number', 'null')
  throwsWith(t, p(ok('F32', [1], -4, 0)), RangeError, 'begin must be a non-negative safe integer', '-4')
  throwsWith(t, p(ok('F32', [1], 0, 4.5)), RangeError, 'end must be', '4.5')
  throwsWith(t, p(ok('F32', [1], 0, 2 ** 60)), RangeError, 'end must be', `${2 ** 60}`)
  throwsWith(t, p(ok('F32', [1], 8, 4)), RangeError, 'tensor "w"', 'begin 8 > end 4')
  throwsWith(t, p(ok('F32', [5], 0, 20)), RangeError, 'tensor "w"', 'end 20', 'data section of 16 bytes')
  throwsWith(t, p(ok('F32', [3], 0, 8)), RangeError, 'tensor "w"', 'needs 12 bytes', 'span 8')
  throwsWith(t, p(ok('F16', [2], 0, 8)), RangeError, 'F16 needs 4 bytes', 'span 8')
  throwsWith(t, p(ok('F4', [3], 0, 1)), RangeError, 'whole number of bytes')
})

test('malformed: byte-length overflow is detected exactly (no float rounding)', (t) => {
  const big = 2 ** 53 - 1 // safe; product with 4 or with another dim overflows doubles
  const p = (shape: number[], end: number) => () => parseSafetensors(build({ w: ok('F32', shape, 0, end) }, 16))
  throwsWith(t, p([big, big, big], 0), RangeError, 'needs', 'bytes')
  throwsWith(t, p([2 ** 30, 2 ** 30, 2 ** 30, 0], 4), RangeError, 'needs 0 bytes', 'span 4')
  // product is exactly 2^64 · 4 bytes, which wraps to 0 in u64 arithmetic: must not pass.
  throwsWith(t, p([2 ** 32, 2 ** 32], 0), RangeError, `needs ${2n ** 66n} bytes`)
  // a zero dim makes everything valid again
  t.deepEqual(parseSafetensors(build({ w: ok('F32', [big, 0, big], 0, 0) }, 0)).info('w').byteLength, 0)
})

test('malformed: overlapping tensors are rejected; gaps and empty tensors are fine', (t) => {
  const d = 32
  throwsWith(t, () => parseSafetensors(build({ a: ok('F32', [2], 0, 8), b: ok('F32', [2], 4, 12) }, d)), RangeError, '"a" [0, 8)', '"b" [4, 12)', 'overlap')
  throwsWith(t, () => parseSafetensors(build({ a: ok('F32', [2], 8, 16), b: ok('F32', [2], 8, 16) }, d)), RangeError, 'overlap')
  // contained in a larger earlier tensor that is not the immediate predecessor
  throwsWith(t, () => parseSafetensors(build({ big: ok('U8', [32], 0, 32), s: ok('U8', [4], 2, 6), t: ok('U8', [4], 20, 24) }, d)), RangeError, '"big"', 'overlap')
  const f = parseSafetensors(build({ a: ok('F32', [1], 0, 4), z: ok('F32', [0], 2, 2), b: ok('F32', [1], 12, 16), e: ok('F32', [0], 32, 32) }, d))
  t.deepEqual(f.names(), ['a', 'b', 'e', 'z'])
})

test('malformed: truncated files', (t) => {
  const good = writeSafetensors({
    a: { dtype: 'F32', shape: [4], data: new Float32Array([1, 2, 3, 4]) },
    b: { dtype: 'F32', shape: [2], data: new Float32Array([5, 6]) },
  })
  t.notThrows(() => parseSafetensors(good))
  let rangeErrors = 0
  for (let len = 0; len < good.length; len++) {
    const err = t.throws(() => parseSafetensors(good.subarray(0, len)))
    if (err instanceof RangeError) rangeErrors++
    else t.true(err instanceof TypeError, `len ${len}: ${err}`)
  }
  t.true(rangeErrors > 0)
  throwsWith(t, () => parseSafetensors(good.subarray(0, good.length - 1)), RangeError, 'beyond the data section', 'truncated')
})

// ---------------------------------------------------------------------- fuzz

function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

test('fuzz: 3000 random mutations/truncations parse or throw TypeError/RangeError only', (t) => {
  const rnd = mulberry32(0x5e7e7)
  const int = (n: number) => Math.floor(rnd() * n)
  const base = writeSafetensors(
    {
      'conv.weight': { dtype: 'F32', shape: [2, 3, 1, 1], data: Float32Array.from({ length: 6 }, (_, i) => i) },
      bias: { dtype: 'F32', shape: [2], data: new Float32Array([1, -1]) },
      h: { dtype: 'F16', shape: [3], bytes: u16le([0x3c00, 0x7c00, 0x0001]) },
      b: { dtype: 'BF16', shape: [1, 2], bytes: u16le([0x3f80, 0xff80]) },
      n: { dtype: 'I32', shape: [1], bytes: new Uint8Array(4) },
    },
    { format: 'pt' },
  )
  const headerLen = Number(new DataView(base.buffer).getBigUint64(0, true))
  const digits = '0123456789-.e'
  let parsed = 0
  const start = Date.now()
  for (let iter = 0; iter < 3000; iter++) {
    let b = base.slice()
    const k = 1 + int(4)
    for (let m = 0; m < k; m++) {
      const kind = int(6)
      if (kind === 0) b = b.slice(0, int(b.length + 1)) // truncate
      else if (kind === 1 && b.length) b[int(b.length)] = int(256) // random byte
      else if (kind === 2 && b.length > 8) b[8 + int(Math.min(headerLen, b.length - 8))] = digits.charCodeAt(int(digits.length)).valueOf() // numeric noise in header
      else if (kind === 3 && b.length >= 8) b[int(8)] = int(256) // header length
      else if (kind === 4 && b.length) b[int(b.length)] ^= 1 << int(8) // bit flip
      else { // duplicate/insert a slice of the header
        const at = Math.min(b.length, 8 + int(headerLen))
        const from = 8 + int(headerLen)
        const ins = base.subarray(from, from + 1 + int(24))
        const nb = new Uint8Array(b.length + ins.length)
        nb.set(b.subarray(0, at))
        nb.set(ins, at)
        nb.set(b.subarray(at), at + ins.length)
        b = nb
      }
    }
    try {
      const f = parseSafetensors(b)
      parsed++
      for (const name of f.names()) {
        const info = f.info(name)
        try {
          t.is(f.getF32(name).length * { F32: 4, F16: 2, BF16: 2, F64: 8 }[info.dtype as 'F32'], info.byteLength)
        } catch (e) {
          if (!(e instanceof TypeError)) throw e
        }
      }
    } catch (e) {
      if (!(e instanceof TypeError || e instanceof RangeError)) {
        t.fail(`iteration ${iter}: unexpected ${(e as Error)?.constructor?.name}: ${e}`)
        return
      }
    }
  }
  t.true(Date.now() - start < 30_000, 'no pathological slowness')
  t.log(`${parsed}/3000 mutated files still parsed`)
  t.pass()
})

// ---------------------------------------------------------------------- files and Python reference

test('cross-check against a file written by Python safetensors', async (t) => {
  const dir = join(__dirname, 'fixtures', 'safetensors')
  const expected = JSON.parse(readFileSync(join(dir, 'mixed.expected.json'), 'utf8')) as {
    metadata: Record<string, string>
    tensors: Record<string, { dtype: string; shape: number[]; f32_bits?: number[]; values?: number[] }>
  }
  const f = await readSafetensors(join(dir, 'mixed.safetensors'))
  t.deepEqual({ ...f.metadata }, expected.metadata)
  t.deepEqual(f.names(), Object.keys(expected.tensors).sort())
  const sizes: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8 }
  for (const [name, e] of Object.entries(expected.tensors)) {
    const info = f.info(name)
    t.is(info.dtype as string, e.dtype, name)
    t.deepEqual(info.shape, e.shape, name)
    t.is(info.byteLength, e.shape.reduce((a, b) => a * b, 1) * sizes[e.dtype], name)
    if (e.f32_bits) t.deepEqual(f32bits(f.getF32(name)), e.f32_bits, name)
    else throwsWith(t, () => f.getF32(name), TypeError, name, e.dtype)
  }
  const steps = new BigInt64Array(f.getBytes('steps').buffer)
  t.deepEqual(Array.from(steps, Number), expected.tensors.steps.values)
  // Our writer reproduces the Python file's tensors and metadata (not necessarily byte-identical
  // headers, as key order in JSON may differ).
  const again = parseSafetensors(
    writeSafetensors({ 'conv.weight': { dtype: 'F32', shape: f.info('conv.weight').shape, data: f.getF32('conv.weight') } }),
  )
  t.deepEqual(f32bits(again.getF32('conv.weight')), expected.tensors['conv.weight'].f32_bits)
})

test('writeSafetensors output is byte-identical to Python safetensors', (t) => {
  const py = readFileSync(join(__dirname, 'fixtures', 'safetensors', 'writer.safetensors'))
  const ours = writeSafetensors(
    {
      b: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      'a.w': { dtype: 'F32', shape: [2, 3], data: Float32Array.from([0, 1, 2, 3, 4, 5]) },
      h: { dtype: 'F16', shape: [1], bytes: u16le([0x3c00]) },
    },
    { format: 'pt' },
  )
  t.true(Buffer.from(ours).equals(py))
})

test('readSafetensors: round trip, truncated and bogus files', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'senet-st-'))
  try {
    const good = writeSafetensors({ w: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } }, { a: 'b' })
    writeFileSync(join(dir, 'good.safetensors'), good)
    const f = await readSafetensors(join(dir, 'good.safetensors'))
    t.deepEqual(Array.from(f.getF32('w')), [1, 2, 3, 4])
    t.is(f.metadata.a, 'b')
    const raw = f.getBytes('w') // the file is held in a Buffer, whose slice() would be a view
    raw.fill(0)
    t.deepEqual(Array.from(f.getF32('w')), [1, 2, 3, 4])

    writeFileSync(join(dir, 'trunc.safetensors'), good.subarray(0, good.length - 4))
    const e1 = await t.throwsAsync(readSafetensors(join(dir, 'trunc.safetensors')), { instanceOf: RangeError })
    t.regex(e1!.message, /tensor "w".*beyond the data section/)

    writeFileSync(join(dir, 'short.safetensors'), new Uint8Array(3))
    await t.throwsAsync(readSafetensors(join(dir, 'short.safetensors')), { instanceOf: RangeError, message: /3 bytes/ })

    writeFileSync(join(dir, 'huge.safetensors'), build({}, 0, { headerLength: 2n ** 62n }))
    await t.throwsAsync(readSafetensors(join(dir, 'huge.safetensors')), { instanceOf: RangeError, message: /cap/ })

    writeFileSync(join(dir, 'long.safetensors'), build({}, 0, { headerLength: 5000n }))
    await t.throwsAsync(readSafetensors(join(dir, 'long.safetensors')), { instanceOf: RangeError, message: /exceeds the 2 bytes/ })

    await t.throwsAsync(readSafetensors(join(dir, 'missing.safetensors')), { code: 'ENOENT' })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('writeSafetensors validates its input', (t) => {
  const f = new Float32Array(4)
  throwsWith(t, () => writeSafetensors({ __metadata__: { dtype: 'F32', shape: [4], data: f } }), TypeError, 'reserved')
  throwsWith(t, () => writeSafetensors({ w: { dtype: 'F32', shape: [3], data: f } }), RangeError, 'tensor "w"', 'needs 12 bytes', 'got 16')
  throwsWith(t, () => writeSafetensors({ w: { dtype: 'F32', shape: [-4], data: f } }), RangeError, 'shape[0]')
  throwsWith(t, () => writeSafetensors({ w: { dtype: 'F32', shape: [4], data: [0, 0, 0, 0] as never } }), TypeError, 'Float32Array')
  throwsWith(t, () => writeSafetensors({ w: { dtype: 'X' as never, shape: [4], data: f } }), TypeError, 'unknown dtype')
  throwsWith(t, () => writeSafetensors({}, { k: 1 as never }), TypeError, 'metadata "k"')
  // subarray views with a non-zero byteOffset are written correctly
  const view = new Float32Array([9, 8, 7, 6, 5]).subarray(1, 4)
  t.deepEqual(Array.from(parseSafetensors(writeSafetensors({ v: { dtype: 'F32', shape: [3], data: view } })).getF32('v')), [8, 7, 6])
  // empty header gets padded too
  const empty = writeSafetensors({})
  t.is(empty.length % 8, 0)
  t.deepEqual(parseSafetensors(empty).names(), [])
})
