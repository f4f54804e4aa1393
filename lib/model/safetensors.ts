/**
 * A pure-TypeScript reader and writer for the safetensors format
 * (https://github.com/huggingface/safetensors), shared by the native and the pure-JS
 * backend to load pretrained weights. No native code, no dependencies beyond Node's
 * `fs`.
 *
 * Layout: an 8-byte little-endian u64 header length `N`, then `N` bytes of UTF-8 JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { k: v } }`,
 * then the data section; offsets are relative to the start of the data section.
 *
 * Validation. Everything the file says is checked before any tensor data is touched,
 * and no allocation is ever sized by an unchecked number: a problem with the file's
 * structure or sizes is a `RangeError`, a problem with types/encoding/JSON a
 * `TypeError`; every message starts with `safetensors:` and names the tensor,
 * the expected and the actual value. Compared with the reference implementation this
 * reader is deliberately lenient in two harmless ways: gaps between tensors and
 * trailing bytes after the last tensor are allowed (the reference requires the
 * tensors to tile the data section exactly). Overlapping tensors are rejected, as the
 * specification forbids them; empty tensors (zero elements, `begin === end`) overlap
 * nothing. Unknown keys inside a tensor entry are ignored. Duplicate JSON keys follow
 * `JSON.parse` (the last one wins).
 *
 * Conversion. {@link SafetensorsFile.getF32} converts F32, F16, BF16 (all bit-exact,
 * including subnormals, ±0, ±inf and NaN payloads) and F64 (rounded to nearest
 * float32, overflowing to ±inf, as `Math.fround`) to a fresh `Float32Array`. It
 * always copies: the result never aliases the file bytes, so the data offset need not
 * be aligned, and mutating either one never affects the other.
 *
 * @packageDocumentation
 */

import { promises as fsp } from 'fs'

/** Every dtype the format defines, with its size in bits. */
const DTYPE_BITS = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  I64: 64,
  U64: 64,
  C64: 64,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
} as const

/**
 * A dtype name as written in a safetensors header. All of them can be listed and
 * inspected with {@link SafetensorsFile.info}; only F32, F16, BF16 and F64 can be
 * read with {@link SafetensorsFile.getF32}. Sub-byte dtypes (F4, F6_*) require the
 * total number of bits to be a multiple of 8, as in the reference implementation.
 */
export type SafetensorsDtype = keyof typeof DTYPE_BITS

/** The dtypes {@link SafetensorsFile.getF32} converts. */
export const F32_CONVERTIBLE_DTYPES: readonly SafetensorsDtype[] = ['F32', 'F16', 'BF16', 'F64']

/**
 * Upper bound on the JSON header length, in bytes (100 MB, the reference
 * implementation's limit). A larger declared length is rejected before anything is
 * allocated.
 */
export const MAX_HEADER_LENGTH = 100_000_000

/** Description of one tensor, as returned by {@link SafetensorsFile.info}. */
export interface SafetensorsTensorInfo {
  /** The element type. */
  readonly dtype: SafetensorsDtype
  /** Dimensions, outermost first (row-major). `[]` is a scalar (one element). */
  readonly shape: readonly number[]
  /** Size of the tensor's data in bytes (`product(shape) × dtype size`). */
  readonly byteLength: number
}

/** A parsed safetensors file. */
export interface SafetensorsFile {
  /** The optional `__metadata__` string map; an empty object when the file has none. */
  readonly metadata: Readonly<Record<string, string>>
  /** Tensor names, sorted by code unit (the order of `Array.prototype.sort`). */
  names(): string[]
  /** Whether a tensor of that name exists (`__metadata__` is never a tensor). */
  has(name: string): boolean
  /**
   * Dtype, shape and byte length of a tensor (a fresh copy each call).
   * @throws RangeError if there is no tensor of that name.
   */
  info(name: string): SafetensorsTensorInfo
  /**
   * The tensor's elements as a fresh `Float32Array` (row-major), converted from F32,
   * F16, BF16 (exactly) or F64 (rounded to nearest). Never aliases the file bytes.
   * @throws RangeError if there is no tensor of that name.
   * @throws TypeError if the tensor's dtype is not one of {@link F32_CONVERTIBLE_DTYPES}.
   */
  getF32(name: string): Float32Array
  /**
   * A copy of the tensor's raw little-endian bytes, for dtypes `getF32` does not
   * convert.
   * @throws RangeError if there is no tensor of that name.
   */
  getBytes(name: string): Uint8Array
}

/** A float32 tensor to write with {@link writeSafetensors}. */
export interface SafetensorsF32Input {
  readonly dtype: 'F32'
  readonly shape: readonly number[]
  /** Row-major elements; length must equal `product(shape)`. */
  readonly data: Float32Array
}

/**
 * A tensor of any dtype to write with {@link writeSafetensors}, given as raw
 * little-endian bytes (used by tests and tools to produce F16/BF16/integer files).
 */
export interface SafetensorsRawInput {
  readonly dtype: SafetensorsDtype
  readonly shape: readonly number[]
  /** Raw data; length must equal `product(shape) × dtype size`. */
  readonly bytes: Uint8Array
}

/** A tensor accepted by {@link writeSafetensors}. */
export type SafetensorsInput = SafetensorsF32Input | SafetensorsRawInput

// ---------------------------------------------------------------------------------

const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k)

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`
  if (typeof v === 'number') return `number ${v}`
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`
}

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && hasOwn(DTYPE_BITS, s)
}

/** Byte length of `shape` elements of `dtype`, or throws (overflow-safe via BigInt). */
function byteLengthOf(what: string, dtype: SafetensorsDtype, shape: readonly number[]): bigint {
  let elements = 1n
  for (const d of shape) elements *= BigInt(d)
  const bits = elements * BigInt(DTYPE_BITS[dtype])
  if (bits % 8n !== 0n) {
    throw new RangeError(
      `safetensors: ${what}: ${elements} elements of ${dtype} (${DTYPE_BITS[dtype]} bits each) ` +
        `do not fill a whole number of bytes`,
    )
  }
  return bits / 8n
}

function checkShape(what: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) {
    throw new TypeError(`safetensors: ${what}: shape must be an array of integers, got ${describe(shape)}`)
  }
  const out: number[] = []
  for (let i = 0; i < shape.length; i++) {
    const d: unknown = shape[i]
    if (typeof d !== 'number') {
      throw new TypeError(`safetensors: ${what}: shape[${i}] must be a number, got ${describe(d)}`)
    }
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(
        `safetensors: ${what}: shape[${i}] must be a non-negative safe integer, got ${d}`,
      )
    }
    out.push(d)
  }
  return out
}

interface Entry {
  readonly name: string
  readonly dtype: SafetensorsDtype
  readonly shape: readonly number[]
  /** Absolute byte offsets into the file bytes. */
  readonly start: number
  readonly byteLength: number
  /** Relative offsets as in the header, for error messages. */
  readonly begin: number
  readonly end: number
}

function parseEntry(name: string, raw: unknown, dataStart: number, dataLength: number): Entry {
  const what = `tensor ${JSON.stringify(name)}`
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new TypeError(`safetensors: ${what}: entry must be an object, got ${describe(raw)}`)
  }
  const o = raw as Record<string, unknown>
  for (const k of ['dtype', 'shape', 'data_offsets']) {
    if (!hasOwn(o, k)) throw new TypeError(`safetensors: ${what}: entry is missing "${k}"`)
  }
  const dtype = o['dtype']
  if (typeof dtype !== 'string') {
    throw new TypeError(`safetensors: ${what}: dtype must be a string, got ${describe(dtype)}`)
  }
  if (!isDtype(dtype)) {
    throw new TypeError(
      `safetensors: ${what}: unknown dtype ${JSON.stringify(dtype)} ` +
        `(expected one of ${Object.keys(DTYPE_BITS).join(', ')})`,
    )
  }
  const shape = checkShape(what, o['shape'])
  const offs = o['data_offsets']
  if (!Array.isArray(offs) || offs.length !== 2) {
    throw new TypeError(
      `safetensors: ${what}: data_offsets must be an array [begin, end], got ` +
        (Array.isArray(offs) ? `an array of length ${offs.length}` : describe(offs)),
    )
  }
  const [begin, end] = offs as unknown[]
  for (const [label, v] of [['begin', begin], ['end', end]] as const) {
    if (typeof v !== 'number') {
      throw new TypeError(`safetensors: ${what}: data_offsets ${label} must be a number, got ${describe(v)}`)
    }
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(
        `safetensors: ${what}: data_offsets ${label} must be a non-negative safe integer, got ${v}`,
      )
    }
  }
  const b = begin as number
  const e = end as number
  if (b > e) {
    throw new RangeError(`safetensors: ${what}: data_offsets begin ${b} > end ${e}`)
  }
  if (e > dataLength) {
    throw new RangeError(
      `safetensors: ${what}: data_offsets end ${e} is beyond the data section of ${dataLength} bytes ` +
        `(file truncated?)`,
    )
  }
  const expected = byteLengthOf(what, dtype, shape)
  if (expected !== BigInt(e - b)) {
    throw new RangeError(
      `safetensors: ${what}: shape [${shape.join(', ')}] of ${dtype} needs ${expected} bytes, ` +
        `but data_offsets [${b}, ${e}] span ${e - b}`,
    )
  }
  return { name, dtype, shape, start: dataStart + b, byteLength: e - b, begin: b, end: e }
}

// F16 → F32 bit patterns for all 65536 inputs (256 KiB), built on first use.
let f16Table: Uint32Array | undefined

function buildF16Table(): Uint32Array {
  const t = new Uint32Array(65536)
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16
    const exp = (h >>> 10) & 0x1f
    let mant = h & 0x3ff
    let bits: number
    if (exp === 0x1f) {
      bits = 0x7f800000 | (mant << 13) // ±inf, NaN (payload kept)
    } else if (exp !== 0) {
      bits = ((exp - 15 + 127) << 23) | (mant << 13)
    } else if (mant === 0) {
      bits = 0 // ±0
    } else {
      // Subnormal: value = mant · 2^-24; normalize so the leading 1 is at bit 10.
      let e = -14
      while ((mant & 0x400) === 0) {
        mant <<= 1
        e--
      }
      bits = ((e + 127) << 23) | ((mant & 0x3ff) << 13)
    }
    t[h] = (sign | bits) >>> 0
  }
  return t
}

/** Validates the declared header length against the cap and the file size. */
function checkHeaderLength(declared: bigint, fileSize: number): number {
  if (declared > BigInt(MAX_HEADER_LENGTH)) {
    throw new RangeError(
      `safetensors: header length ${declared} exceeds the ${MAX_HEADER_LENGTH}-byte cap ` +
        `(corrupt or not a safetensors file)`,
    )
  }
  const n = Number(declared)
  if (n > fileSize - 8) {
    throw new RangeError(
      `safetensors: header length ${n} exceeds the ${fileSize - 8} bytes after ` +
        `the 8-byte prefix (file truncated or not a safetensors file)`,
    )
  }
  return n
}

class ParsedFile implements SafetensorsFile {
  readonly metadata: Readonly<Record<string, string>>
  private readonly bytes: Uint8Array
  private readonly entries: Map<string, Entry>
  private readonly sortedNames: string[]

  constructor(bytes: Uint8Array, entries: Map<string, Entry>, metadata: Record<string, string>) {
    this.bytes = bytes
    this.entries = entries
    this.metadata = Object.freeze(metadata)
    this.sortedNames = [...entries.keys()].sort()
  }

  names(): string[] {
    return this.sortedNames.slice()
  }

  has(name: string): boolean {
    return this.entries.has(name)
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name)
    if (e === undefined) {
      throw new RangeError(`safetensors: no tensor named ${JSON.stringify(name)}`)
    }
    return e
  }

  info(name: string): SafetensorsTensorInfo {
    const e = this.entry(name)
    return { dtype: e.dtype, shape: e.shape.slice(), byteLength: e.byteLength }
  }

  getBytes(name: string): Uint8Array {
    const e = this.entry(name)
    // Not bytes.slice(): on a Buffer (what readSafetensors holds) that is a view.
    const out = new Uint8Array(e.byteLength)
    out.set(this.bytes.subarray(e.start, e.start + e.byteLength))
    return out
  }

  getF32(name: string): Float32Array {
    const e = this.entry(name)
    const src = this.bytes.subarray(e.start, e.start + e.byteLength)
    switch (e.dtype) {
      case 'F32': {
        const n = e.byteLength / 4
        const out = new Float32Array(n)
        if (LITTLE_ENDIAN_HOST) {
          new Uint8Array(out.buffer).set(src)
        } else {
          const dv = new DataView(src.buffer, src.byteOffset, src.byteLength)
          for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true)
        }
        return out
      }
      case 'F16': {
        const n = e.byteLength / 2
        const out = new Float32Array(n)
        const bits = new Uint32Array(out.buffer)
        const t = (f16Table ??= buildF16Table())
        for (let i = 0, j = 0; i < n; i++, j += 2) bits[i] = t[src[j] | (src[j + 1] << 8)]
        return out
      }
      case 'BF16': {
        const n = e.byteLength / 2
        const out = new Float32Array(n)
        const bits = new Uint32Array(out.buffer)
        for (let i = 0, j = 0; i < n; i++, j += 2) bits[i] = ((src[j] | (src[j + 1] << 8)) << 16) >>> 0
        return out
      }
      case 'F64': {
        const n = e.byteLength / 8
        const out = new Float32Array(n)
        if (LITTLE_ENDIAN_HOST && src.byteOffset % 8 === 0) {
          out.set(new Float64Array(src.buffer, src.byteOffset, n)) // rounds to nearest
        } else {
          const dv = new DataView(src.buffer, src.byteOffset, src.byteLength)
          for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true)
        }
        return out
      }
      default:
        throw new TypeError(
          `safetensors: tensor ${JSON.stringify(name)} has dtype ${e.dtype}, which getF32 cannot ` +
            `convert (supported: ${F32_CONVERTIBLE_DTYPES.join(', ')})`,
        )
    }
  }
}

/**
 * Parses a safetensors file held in memory. The whole header is validated up front
 * (see the module documentation for the rules); tensor data is converted lazily by
 * {@link SafetensorsFile.getF32}.
 *
 * The returned object keeps a reference to `bytes` (no copy is made): mutating `bytes`
 * afterwards changes what later `getF32`/`getBytes` calls return, but never arrays
 * they returned before.
 *
 * @param bytes - The complete file contents (a `Buffer` works too; any byte offset).
 * @throws RangeError for structural/size problems: file shorter than 8 bytes, header
 *   length over {@link MAX_HEADER_LENGTH} or beyond the file, negative/non-integer/
 *   unsafe shape dims or offsets, begin > end, end beyond the data section, byte length
 *   not matching the shape, overlapping tensors.
 * @throws TypeError for encoding/typing problems: header not UTF-8, not JSON, not an
 *   object, an entry missing a field or with a field of the wrong type, unknown dtype,
 *   bad `__metadata__`.
 */
export function parseSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`safetensors: expected a Uint8Array, got ${describe(bytes)}`)
  }
  if (bytes.length < 8) {
    throw new RangeError(
      `safetensors: file is ${bytes.length} bytes, shorter than the 8-byte header length prefix`,
    )
  }
  const headerLength = checkHeaderLength(
    new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true),
    bytes.length,
  )
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(
      bytes.subarray(8, 8 + headerLength),
    )
  } catch {
    throw new TypeError('safetensors: header is not valid UTF-8')
  }
  let header: unknown
  try {
    header = JSON.parse(text)
  } catch (err) {
    throw new TypeError(`safetensors: header is not valid JSON (${(err as Error).message})`)
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new TypeError(`safetensors: header must be a JSON object, got ${describe(header)}`)
  }

  const dataStart = 8 + headerLength
  const dataLength = bytes.length - dataStart
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>
  const entries = new Map<string, Entry>()
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null) continue
      if (typeof raw !== 'object' || Array.isArray(raw)) {
        throw new TypeError(`safetensors: __metadata__ must be an object of strings, got ${describe(raw)}`)
      }
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new TypeError(
            `safetensors: __metadata__ ${JSON.stringify(k)} must be a string, got ${describe(v)}`,
          )
        }
        metadata[k] = v
      }
      continue
    }
    entries.set(name, parseEntry(name, raw, dataStart, dataLength))
  }

  // Overlap check: sort non-empty tensors by begin; each must start at or after the
  // furthest end seen so far.
  const spans = [...entries.values()].filter((e) => e.byteLength > 0).sort((a, b) => a.begin - b.begin)
  let prev: Entry | undefined
  for (const e of spans) {
    if (prev !== undefined && e.begin < prev.end) {
      throw new RangeError(
        `safetensors: tensors ${JSON.stringify(prev.name)} [${prev.begin}, ${prev.end}) and ` +
          `${JSON.stringify(e.name)} [${e.begin}, ${e.end}) overlap`,
      )
    }
    if (prev === undefined || e.end > prev.end) prev = e
  }

  return new ParsedFile(bytes, entries, metadata)
}

/**
 * Reads and parses a safetensors file. The file is read into a single `Buffer` (one
 * copy of the file stays alive while the returned object is reachable; each
 * `getF32` adds a copy of just that tensor). The header length is checked against
 * the file size before the file is read, so a corrupt prefix never triggers a large
 * read.
 *
 * @param path - Path of the `.safetensors` file.
 * @throws Whatever `fs` throws for I/O failures, and the errors of {@link parseSafetensors}.
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  const fh = await fsp.open(path, 'r')
  try {
    const { size } = await fh.stat()
    if (size >= 8) {
      const prefix = new Uint8Array(8)
      const { bytesRead } = await fh.read(prefix, 0, 8, 0)
      if (bytesRead === 8) checkHeaderLength(new DataView(prefix.buffer).getBigUint64(0, true), size)
    }
    const bytes = await fh.readFile()
    return parseSafetensors(bytes)
  } finally {
    await fh.close()
  }
}

/**
 * Serializes tensors to the safetensors format, as the reference implementation does:
 * tensors laid out contiguously, sorted by dtype alignment (largest first) then name;
 * the header lists `__metadata__` first and is padded with spaces so that the data
 * section starts at a multiple of 8 bytes. Data is written little-endian.
 *
 * @param tensors - Tensors by name: float32 data (`{dtype: 'F32', shape, data}`) or
 *   raw bytes of any dtype (`{dtype, shape, bytes}`).
 * @param metadata - Optional string map stored as `__metadata__`.
 * @returns The file contents.
 * @throws TypeError for a name `__metadata__`, an unknown dtype, a wrong data type or a
 *   non-string metadata value; RangeError for bad shapes or a data length that does
 *   not match the shape.
 */
export function writeSafetensors(
  tensors: Readonly<Record<string, SafetensorsInput>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  interface Planned {
    name: string
    dtype: SafetensorsDtype
    shape: number[]
    bytes: Uint8Array
  }
  const planned: Planned[] = []
  for (const name of Object.keys(tensors)) {
    const what = `tensor ${JSON.stringify(name)}`
    if (name === '__metadata__') {
      throw new TypeError('safetensors: "__metadata__" is reserved and cannot name a tensor')
    }
    const t = tensors[name]
    if (!isDtype(t.dtype)) {
      throw new TypeError(`safetensors: ${what}: unknown dtype ${JSON.stringify(t.dtype)}`)
    }
    const shape = checkShape(what, t.shape)
    const need = byteLengthOf(what, t.dtype, shape)
    let bytes: Uint8Array
    if ('data' in t) {
      if (t.dtype !== 'F32' || !(t.data instanceof Float32Array)) {
        throw new TypeError(`safetensors: ${what}: "data" must be a Float32Array with dtype F32`)
      }
      if (LITTLE_ENDIAN_HOST) {
        bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
      } else {
        bytes = new Uint8Array(t.data.length * 4)
        const dv = new DataView(bytes.buffer)
        t.data.forEach((v, i) => dv.setFloat32(4 * i, v, true))
      }
    } else {
      if (!(t.bytes instanceof Uint8Array)) {
        throw new TypeError(`safetensors: ${what}: "bytes" must be a Uint8Array`)
      }
      bytes = t.bytes
    }
    if (BigInt(bytes.byteLength) !== need) {
      throw new RangeError(
        `safetensors: ${what}: shape [${shape.join(', ')}] of ${t.dtype} needs ${need} bytes, ` +
          `got ${bytes.byteLength}`,
      )
    }
    planned.push({ name, dtype: t.dtype, shape, bytes })
  }
  planned.sort(
    (a, b) =>
      DTYPE_BITS[b.dtype] - DTYPE_BITS[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  )

  const parts: string[] = []
  if (metadata !== undefined) {
    const m: string[] = []
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new TypeError(`safetensors: metadata ${JSON.stringify(k)} must be a string, got ${describe(v)}`)
      }
      m.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`)
    }
    parts.push(`"__metadata__":{${m.join(',')}}`)
  }
  let offset = 0
  for (const p of planned) {
    const end = offset + p.bytes.byteLength
    parts.push(
      `${JSON.stringify(p.name)}:{"dtype":"${p.dtype}","shape":[${p.shape.join(',')}],` +
        `"data_offsets":[${offset},${end}]}`,
    )
    offset = end
  }
  let header = new TextEncoder().encode(`{${parts.join(',')}}`)
  const padded = Math.ceil(header.length / 8) * 8
  if (padded !== header.length) {
    const h = new Uint8Array(padded).fill(0x20)
    h.set(header)
    header = h
  }
  const out = new Uint8Array(8 + header.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true)
  out.set(header, 8)
  let pos = 8 + header.length
  for (const p of planned) {
    out.set(p.bytes, pos)
    pos += p.bytes.byteLength
  }
  return out
}
