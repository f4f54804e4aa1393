/**
 * The public model class, independent of the executor.
 *
 * `SEResNet` here carries the whole API; each entry point binds it to a backend by
 * subclassing and setting one static field:
 *
 * ```ts
 * // lib/js/index.ts (pure JS)            // lib/index.ts (native)
 * export class SEResNet extends SEResNetBase {
 *   protected static override readonly backend: ModelBackend = jsBackend   // or nativeBackend
 * }
 * ```
 *
 * `create` / `fromSafetensors` use `this.backend` and `new this(...)`, so both exports
 * have identical types and behaviour. Everything is validated here, before anything
 * reaches a backend, and a rejected call leaves the model usable.
 *
 * @packageDocumentation
 */

import { readFileSync, statSync } from 'fs'
import { resolve as resolvePath } from 'path'
import { type Arch, type ResolvedConfig, type SEResNetConfig, isArch, resolveConfig } from './config'
import { buildProgram, countParams, minInputSize, randomParams } from './build'
import { type OnnxExportOptions, checkInputSize, checkOnnxOptions, programToOnnx, programToOnnxFile } from './onnx'
import type { CompiledModel, ModelBackend, Program } from './program'
import { parseSafetensors, readSafetensors, type SafetensorsFile } from './safetensors'
import { matchWeights } from './weights'

/** Options of {@link SEResNet.create}. */
export interface SEResNetCreateOptions {
  /** Classifier outputs (default: the config's, 1000 for the named architectures). */
  numClasses?: number
  /** Seed of the deterministic random initialisation (default 0); see `randomParams` in build.ts. */
  seed?: number
}

/** Options of {@link SEResNet.fromSafetensors}. */
export interface SEResNetLoadOptions {
  /** Expected classifier outputs; default: read from the file's `fc.weight` / `last_linear.weight`. */
  numClasses?: number
}

type Shape = [number, number, number, number]

/**
 * Where a model's weights came from: enough to rebuild its program on demand (for
 * {@link SEResNet.toOnnx}) without keeping a JS copy of every weight alive beside the
 * backend's own.
 */
type WeightsOrigin =
  | { kind: 'random'; seed: number }
  /** A file, re-read on export; size and mtime detect a file changed since loading. */
  | { kind: 'file'; path: string; size: number; mtimeMs: number }
  /** The caller's bytes, kept by reference (see fromSafetensors). */
  | { kind: 'bytes'; bytes: Uint8Array; byteLength: number }

/** State an instance owns; the compiled model is dropped on dispose. */
interface Internals {
  compiled: CompiledModel | undefined
  minSize: number
  origin: WeightsOrigin
  /** The label `matchWeights` names the architecture by in errors. */
  label: string
}

const internals = new WeakMap<SEResNet, Internals>()

function checkNumClasses(v: unknown, where: string): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw new RangeError(`${where}: opts.numClasses must be a positive integer, got ${JSON.stringify(v)}`)
  }
  return v
}

/** `opts` an object (or undefined) with no key outside `known`: a misspelt option would otherwise be ignored. */
function checkOpts(opts: unknown, where: string, known: readonly string[]): Record<string, unknown> {
  if (opts === undefined) return {}
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new TypeError(`${where}: opts must be an object, got ${opts === null ? 'null' : Array.isArray(opts) ? 'an array' : typeof opts}`)
  }
  for (const key of Object.keys(opts)) {
    if (!known.includes(key)) throw new TypeError(`${where}: opts.${key} is not an option (known: ${known.join(', ')})`)
  }
  return opts as Record<string, unknown>
}

/**
 * Reads, checks and folds the weights. A separate function so that the file's bytes are
 * unreachable (collectable) by the time the backend compiles: each tensor is converted
 * on demand and folded in place, so there are never two float32 copies of all weights
 * besides the file, and the file is gone before the backend makes its own copy.
 */
async function loadProgram(
  base: ResolvedConfig,
  source: string | Uint8Array,
  label: string,
  numClasses: number | undefined,
): Promise<{ config: ResolvedConfig; program: Program }> {
  let file: SafetensorsFile
  if (typeof source === 'string') file = await readSafetensors(source)
  else if (source instanceof Uint8Array) file = parseSafetensors(source)
  else {
    throw new TypeError(`SEResNet.fromSafetensors: source must be a file path (string) or a Uint8Array, got ${source === null ? 'null' : typeof source}`)
  }
  const matched = matchWeights(base, file, label, numClasses === undefined ? {} : { numClasses })
  return { config: matched.config, program: buildProgram(matched.config, matched.source, { inPlace: true }) }
}

/** The program of a model, rebuilt from where its weights came from (as loading built it). */
function rebuildProgram(config: ResolvedConfig, origin: WeightsOrigin, label: string): Program {
  if (origin.kind === 'random') return buildProgram(config, randomParams(config, origin.seed), { inPlace: true })
  let file: SafetensorsFile
  if (origin.kind === 'file') {
    let st
    try {
      st = statSync(origin.path)
    } catch (e) {
      throw new Error(`SEResNet.toOnnx: cannot re-read the weights file ${origin.path}: ${(e as Error).message}`)
    }
    if (st.size !== origin.size || st.mtimeMs !== origin.mtimeMs) {
      throw new Error(`SEResNet.toOnnx: the weights file ${origin.path} changed since the model was loaded; load it again`)
    }
    file = parseSafetensors(readFileSync(origin.path))
  } else {
    if (origin.bytes.byteLength !== origin.byteLength) {
      throw new Error('SEResNet.toOnnx: the Uint8Array the model was loaded from was detached or resized; load the model again')
    }
    file = parseSafetensors(origin.bytes)
  }
  // numClasses is fixed to the model's, so the rebuilt program has the loaded shapes.
  const matched = matchWeights(config, file, label, { numClasses: config.numClasses })
  return buildProgram(matched.config, matched.source, { inPlace: true })
}

function archLabel(arch: Arch | SEResNetConfig): string {
  return isArch(arch) ? arch : 'custom config'
}

/**
 * A Squeeze-and-Excitation ResNet (or ResNeXt / SENet-154 / plain ResNet) ready to run.
 * Use the backend-bound subclass exported by `senet` (native) or `senet/js` (pure JS).
 */
export class SEResNet {
  /** The executor `create` / `fromSafetensors` compile with; set by each entry point's subclass. */
  protected static readonly backend: ModelBackend | undefined = undefined

  /** The architecture name (or `'custom'` for a config object). */
  readonly arch: string
  /** Number of elements of `model.parameters()` in PyTorch (BN running statistics excluded). */
  readonly numParams: number
  /** Logits per image. */
  readonly numClasses: number
  /** The complete configuration this model was built from. */
  readonly config: Readonly<ResolvedConfig>
  /** Which executor runs it. */
  readonly backend: 'native' | 'js'

  /** Use {@link SEResNet.create} or {@link SEResNet.fromSafetensors}. */
  protected constructor(
    arch: string,
    config: ResolvedConfig,
    compiled: CompiledModel,
    minSize: number,
    backend: 'native' | 'js',
    origin: WeightsOrigin,
    label: string,
  ) {
    this.arch = arch
    this.config = Object.freeze({ ...config })
    this.numParams = countParams(config)
    this.numClasses = config.numClasses
    this.backend = backend
    internals.set(this, { compiled, minSize, origin, label })
  }

  private static requireBackend(where: string): ModelBackend {
    const b = this.backend
    if (!b) throw new Error(`${where}: this SEResNet class has no backend; import SEResNet from 'senet' or 'senet/js'`)
    return b
  }

  /**
   * A model with deterministic random weights (for benchmarks and tests).
   * @throws TypeError for an unknown architecture name (the valid ones are listed) or bad config field.
   * @throws RangeError for a bad numClasses / seed.
   */
  static create(arch: Arch | SEResNetConfig, opts?: SEResNetCreateOptions): SEResNet {
    const backend = this.requireBackend('SEResNet.create')
    const o = checkOpts(opts, 'SEResNet.create', ['numClasses', 'seed'])
    const base = resolveConfig(arch)
    const numClasses = checkNumClasses(o.numClasses, 'SEResNet.create') ?? base.numClasses
    const seed = o.seed ?? 0
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
      throw new RangeError(`SEResNet.create: opts.seed must be a safe integer, got ${JSON.stringify(seed)}`)
    }
    const config: ResolvedConfig = { ...base, numClasses }
    const program = buildProgram(config, randomParams(config, seed), { inPlace: true })
    const minSize = minInputSize(program)
    return new this(isArch(arch) ? arch : 'custom', config, backend.compile(program), minSize, backend.name, { kind: 'random', seed }, archLabel(arch))
  }

  /**
   * Loads weights saved from timm (`safetensors.torch.save_file(model.state_dict(), path)`).
   * Names must be exactly the architecture's (timm's or Cadene's `legacy_` names);
   * `num_batches_tracked` is ignored; F32, F16, BF16 and F64 tensors are accepted.
   * @param source a file path or the file's bytes. A path is read once here and again
   *   by {@link toOnnx}. Bytes are kept by reference for {@link toOnnx}: the model then
   *   keeps the file's size in memory alive for its lifetime even if the caller drops
   *   them (pass a path when memory matters), and exports whatever the array holds
   *   then (do not modify it).
   * @throws RangeError listing every missing, unexpected and mis-shaped tensor.
   */
  static async fromSafetensors(arch: Arch | SEResNetConfig, source: string | Uint8Array, opts?: SEResNetLoadOptions): Promise<SEResNet> {
    const backend = this.requireBackend('SEResNet.fromSafetensors')
    const o = checkOpts(opts, 'SEResNet.fromSafetensors', ['numClasses'])
    const base = resolveConfig(arch)
    const numClasses = checkNumClasses(o.numClasses, 'SEResNet.fromSafetensors')
    let origin: WeightsOrigin
    if (typeof source === 'string') {
      const path = resolvePath(source)
      // Stat before reading: a file replaced meanwhile then fails toOnnx's check rather than passing it.
      const st = statSync(path, { throwIfNoEntry: false })
      origin = { kind: 'file', path, size: st?.size ?? -1, mtimeMs: st?.mtimeMs ?? -1 }
    } else {
      origin = { kind: 'bytes', bytes: source, byteLength: source instanceof Uint8Array ? source.byteLength : 0 }
    }
    const { config, program } = await loadProgram(base, source, archLabel(arch), numClasses)
    const minSize = minInputSize(program)
    return new this(isArch(arch) ? arch : 'custom', config, backend.compile(program), minSize, backend.name, origin, archLabel(arch))
  }

  /** The smallest input height/width this architecture accepts (every op keeps a size ≥ 1, as in PyTorch). */
  get minInputSize(): number {
    return this.state('minInputSize').minSize
  }

  /** Whether {@link dispose} has been called. */
  get disposed(): boolean {
    return internals.get(this)?.compiled === undefined
  }

  private state(where: string): Internals & { compiled: CompiledModel } {
    const s = internals.get(this)
    if (!s || !s.compiled) throw new Error(`SEResNet.${where}: the model was disposed (dispose() was called); create a new one`)
    return s as Internals & { compiled: CompiledModel }
  }

  private validate(where: string, x: unknown, shape: unknown, minSize: number): Shape {
    if (!(x instanceof Float32Array)) {
      const got = x === null ? 'null' : typeof x === 'object' ? (x as object).constructor?.name ?? 'object' : typeof x
      throw new TypeError(`SEResNet.${where}: x must be a Float32Array, got ${got}`)
    }
    if (!Array.isArray(shape) || shape.length !== 4) {
      throw new TypeError(`SEResNet.${where}: shape must be [n, c, h, w] (4 numbers), got ${JSON.stringify(shape)}`)
    }
    const names = ['n', 'c', 'h', 'w']
    shape.forEach((d, i) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) {
        throw new RangeError(`SEResNet.${where}: shape[${i}] (${names[i]}) must be a positive safe integer, got ${JSON.stringify(d)}`)
      }
    })
    const [n, c, h, w] = shape as Shape
    if (c !== this.config.inChans) {
      throw new RangeError(`SEResNet.${where}: shape[1] (channels) must be ${this.config.inChans}, got ${c}`)
    }
    if (h < minSize || w < minSize) {
      throw new RangeError(
        `SEResNet.${where}: input ${h}×${w} is too small for ${this.arch}: height and width must be at least ${minSize}`,
      )
    }
    const len = n * c * h * w
    if (!Number.isSafeInteger(len) || x.length !== len) {
      throw new RangeError(`SEResNet.${where}: x.length must be n·c·h·w = ${n}·${c}·${h}·${w} = ${len}, got ${x.length}`)
    }
    return [n, c, h, w]
  }

  /**
   * Logits for a batch, computed on the calling thread.
   * @param x NCHW float32 images (already normalised as the weights expect).
   * @param shape [n, 3, h, w]; h and w at least {@link minInputSize}.
   * @returns n·numClasses logits, row-major [n, numClasses].
   * @throws TypeError / RangeError naming the bad argument; Error after {@link dispose}.
   */
  forwardSync(x: Float32Array, shape: [number, number, number, number]): Float32Array {
    const s = this.state('forwardSync')
    return s.compiled.forwardSync(x, this.validate('forwardSync', x, shape, s.minSize))
  }

  /**
   * Same as {@link forwardSync}, off the JS thread where the backend can do that.
   * Validation errors reject the promise (nothing is thrown synchronously).
   */
  async forward(x: Float32Array, shape: [n: number, c: 3, h: number, w: number]): Promise<Float32Array> {
    const s = this.state('forward')
    return s.compiled.forward(x, this.validate('forward', x, shape, s.minSize))
  }

  /**
   * The model as an ONNX file's bytes (opset 13; input `input` [N, C, H, W] with symbolic
   * N, H, W, or fixed H, W with `opts.inputSize` and fixed N with `opts.batchSize`;
   * output `logits` [N, numClasses];
   * BatchNorm folded), e.g. to run the same weights in onnxruntime. See
   * `lib/model/onnx.ts` for the graph.
   *
   * The model keeps no JS copy of its weights, so they are rebuilt here from their
   * origin: regenerated from the seed ({@link create}), re-read from the file (which must
   * not have changed since loading), or re-parsed from the bytes given to
   * {@link fromSafetensors}. Transient memory: the folded weights plus the result
   * (≈ 2 × 4 bytes per parameter, plus the file while it is parsed); use
   * {@link toOnnxFile} to avoid the result buffer.
   * @throws Error after {@link dispose}, or when the weights' file changed or is gone;
   *   TypeError / RangeError for an `opts.inputSize` that is not [height, width] of
   *   positive integers at least {@link minInputSize}, a `batchSize` that is not a
   *   positive integer, a non-string name, or an unknown option.
   */
  toOnnx(opts?: OnnxExportOptions): Uint8Array {
    const o = this.onnxOptions(opts, 'toOnnx')
    return programToOnnx(this.exportProgram('toOnnx'), o)
  }

  /**
   * Writes {@link toOnnx}'s bytes to `path`, streaming the weights (no buffer of the
   * file's size).
   */
  async toOnnxFile(path: string, opts?: OnnxExportOptions): Promise<void> {
    if (typeof path !== 'string') throw new TypeError(`SEResNet.toOnnxFile: path must be a string, got ${typeof path}`)
    const o = this.onnxOptions(opts, 'toOnnxFile')
    await programToOnnxFile(this.exportProgram('toOnnxFile'), path, o)
  }

  private exportProgram(where: string): Program {
    const s = this.state(where)
    return rebuildProgram(this.config, s.origin, s.label)
  }

  /** The export options, checked before any weight is rebuilt or file opened. */
  private onnxOptions(opts: OnnxExportOptions | undefined, where: string): OnnxExportOptions {
    const o = checkOnnxOptions(opts, `SEResNet.${where}`)
    const size = checkInputSize(o.inputSize, `SEResNet.${where}`)
    const min = this.state(where).minSize
    if (size && (size[0] < min || size[1] < min)) {
      throw new RangeError(`SEResNet.${where}: opts.inputSize ${size[0]}×${size[1]} is too small for ${this.arch}: height and width must be at least ${min}`)
    }
    return { graphName: this.arch, docString: `${this.arch} exported by senet (BatchNorm folded)`, ...o }
  }

  /** Frees the compiled weights. Idempotent; later forward calls throw. */
  dispose(): void {
    const s = internals.get(this)
    if (s?.compiled) {
      const c = s.compiled
      s.compiled = undefined
      c.dispose()
    }
  }
}
