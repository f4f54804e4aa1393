/**
 * Declarative description of an SE-ResNet / SE-ResNeXt / SENet-154 / ResNet, and the
 * named architectures of timm 1.0.31 (`timm/models/resnet.py`, the "timm" family) and
 * of Cadene's pretrained-models (`timm/models/senet.py`, the "legacy_" family).
 *
 * A config says only what changes the computation or the state_dict names; everything
 * else (which blocks get a projection shortcut, the widths inside a block) follows the
 * rules of those two code bases, implemented once in `build.ts`.
 *
 * @packageDocumentation
 */

/** Where the Squeeze-and-Excitation unit sits in a residual block (Hu et al., TPAMI 2019, Fig. 5). */
export type SEPlacement =
  /** On the residual branch after its last BN, before the addition (every released SE net). */
  | 'standard'
  /** SE-PRE: on the residual branch's input, before its first convolution (SE has the block's input channels). */
  | 'pre'
  /** SE-POST: after the addition with the identity branch and its ReLU. */
  | 'post'
  /** SE-Identity: on the identity branch (after the projection, if any), parallel to the residual unit. */
  | 'identity'
  /** No SE unit: a plain ResNet. */
  | 'none'

/** A Squeeze-and-Excitation ResNet family member. Optional fields have the defaults given. */
export interface SEResNetConfig {
  /** Residual block: two 3×3 convs ('basic', expansion 1) or 1×1-3×3-1×1 ('bottleneck', expansion 4). */
  block: 'basic' | 'bottleneck'
  /** Number of blocks in each of the four stages. */
  layers: [number, number, number, number]
  /** `planes` of each stage; a stage outputs `planes · expansion` channels. Default [64, 128, 256, 512]. */
  channels?: [number, number, number, number]
  /** Groups of the 3×3 convolution of a bottleneck (ResNeXt cardinality). Default 1. */
  groups?: number
  /**
   * ResNeXt base width: a bottleneck's inner width is `floor(planes · baseWidth / 64) · groups`
   * (timm `Bottleneck`, Cadene `SEResNeXtBottleneck`). Default 64 (= planes when groups is 1).
   */
  baseWidth?: number
  /**
   * Inner widths of a bottleneck: 'resnext' as above (conv1 and conv2 both that width), or
   * 'senet154' (Cadene `SEBottleneck`: conv1 → 2·planes, grouped conv2 → 4·planes). Default 'resnext'.
   */
  bottleneckWidth?: 'resnext' | 'senet154'
  /** Output channels of a block per `planes`. Default 1 for 'basic', 4 for 'bottleneck'. */
  expansion?: number
  /**
   * Stem. 'timm': 7×7/2 conv, BN, ReLU, maxpool 3/2 pad 1 (floor). 'legacy' (Cadene layer0):
   * 7×7/2 conv, BN, ReLU, maxpool 3/2 pad 0 ceil_mode. 'legacy3x3' (SENet-154): three 3×3
   * convs (stride 2, 1, 1) of widths stemMidWidth, stemMidWidth, stemWidth, each with BN and
   * ReLU, then the ceil_mode maxpool. Default 'timm'.
   */
  stem?: 'timm' | 'legacy' | 'legacy3x3'
  /** Channels out of the stem (layer1's input). Default 64 (timm's ResNet always uses 64 with its 7×7 stem). */
  stemWidth?: number
  /** Width of the first two convs of the 'legacy3x3' stem. Default 64. */
  stemMidWidth?: number
  /**
   * Which conv of a bottleneck carries the stage's stride: '3x3' (timm, torchvision, Cadene
   * `SEResNeXtBottleneck` and `SEBottleneck`) or '1x1' (Cadene `SEResNetBottleneck`, i.e. the
   * legacy_seresnet50/101/152 weights, Caffe's choice). A basic block always strides its first 3×3.
   * Default '3x3'.
   */
  strideOn?: '3x3' | '1x1'
  /**
   * Kernel of the projection shortcut in stages 2–4 (stage 1's projection is always 1×1).
   * Default 1; SENet-154 uses 3.
   */
  downsampleKernel?: number
  /** Padding of that projection. Default `(downsampleKernel - 1) / 2` rounded down. */
  downsamplePadding?: number
  /**
   * ReLU after the residual branch's last BN too (before SE and the addition). Cadene's
   * `SEResNetBlock` (legacy_seresnet18/34) does this; every other block does not. Default false.
   */
  lastBranchReLU?: boolean
  /** SE placement. Default 'standard'. */
  se?: SEPlacement
  /** SE reduction ratio r. Default 16. */
  seReduction?: number
  /**
   * SE bottleneck width for C channels: 'timm' = `make_divisible(C / r, 8)` with
   * round_limit 0 (timm.layers.SEModule, as timm's ResNet creates it: rounds to the nearest
   * multiple of 8, at least 8); 'legacy' = `floor(C / r)` (Cadene `SEModule`). Default 'timm'.
   */
  seWidth?: 'timm' | 'legacy'
  /** Whether the SE 1×1 convs have biases (timm and Cadene: yes). Default true. */
  seBias?: boolean
  /**
   * state_dict naming: 'timm' (`conv1`, `bn1`, `layerN.i.se.fc1`, `fc`) or 'legacy'
   * (`layer0.conv1`, `layerN.i.se_module.fc1`, `last_linear`). Default 'timm'.
   */
  keys?: 'timm' | 'legacy'
  /** Classifier outputs. Default 1000. */
  numClasses?: number
  /** Input channels; only 3 is supported. Default 3. */
  inChans?: 3
}

/** A config with every default filled in and checked (what `build.ts` works from). */
export type ResolvedConfig = Required<SEResNetConfig>

const bottleneck50 = { block: 'bottleneck', layers: [3, 4, 6, 3] } as const

function timm(c: SEResNetConfig): SEResNetConfig {
  return { stem: 'timm', keys: 'timm', seWidth: 'timm', strideOn: '3x3', ...c }
}

function legacy(c: SEResNetConfig): SEResNetConfig {
  return { stem: 'legacy', keys: 'legacy', seWidth: 'legacy', ...c }
}

/**
 * The named architectures, exactly as timm 1.0.31 builds them (`timm.create_model(name)`):
 * same computation, same state_dict names and shapes, same parameter count.
 */
export const ARCHS = {
  seresnet18: timm({ block: 'basic', layers: [2, 2, 2, 2] }),
  seresnet34: timm({ block: 'basic', layers: [3, 4, 6, 3] }),
  seresnet50: timm({ ...bottleneck50, layers: [3, 4, 6, 3] }),
  seresnet101: timm({ ...bottleneck50, layers: [3, 4, 23, 3] }),
  seresnet152: timm({ ...bottleneck50, layers: [3, 8, 36, 3] }),
  seresnext50_32x4d: timm({ ...bottleneck50, layers: [3, 4, 6, 3], groups: 32, baseWidth: 4 }),
  seresnext101_32x4d: timm({ ...bottleneck50, layers: [3, 4, 23, 3], groups: 32, baseWidth: 4 }),
  legacy_seresnet18: legacy({ block: 'basic', layers: [2, 2, 2, 2], lastBranchReLU: true }),
  legacy_seresnet34: legacy({ block: 'basic', layers: [3, 4, 6, 3], lastBranchReLU: true }),
  legacy_seresnet50: legacy({ ...bottleneck50, layers: [3, 4, 6, 3], strideOn: '1x1' }),
  legacy_seresnet101: legacy({ ...bottleneck50, layers: [3, 4, 23, 3], strideOn: '1x1' }),
  legacy_seresnet152: legacy({ ...bottleneck50, layers: [3, 8, 36, 3], strideOn: '1x1' }),
  legacy_seresnext50_32x4d: legacy({ ...bottleneck50, layers: [3, 4, 6, 3], groups: 32, baseWidth: 4, strideOn: '3x3' }),
  legacy_seresnext101_32x4d: legacy({ ...bottleneck50, layers: [3, 4, 23, 3], groups: 32, baseWidth: 4, strideOn: '3x3' }),
  legacy_senet154: legacy({
    ...bottleneck50,
    layers: [3, 8, 36, 3],
    groups: 64,
    bottleneckWidth: 'senet154',
    strideOn: '3x3',
    stem: 'legacy3x3',
    stemWidth: 128,
    stemMidWidth: 64,
    downsampleKernel: 3,
    downsamplePadding: 1,
  }),
  resnet50: timm({ ...bottleneck50, layers: [3, 4, 6, 3], se: 'none' }),
} satisfies Record<string, SEResNetConfig>

/** A named architecture. */
export type Arch = keyof typeof ARCHS

/** The names of {@link ARCHS}. */
export const ARCH_NAMES = Object.keys(ARCHS) as Arch[]

/** Whether `name` is one of {@link ARCHS}. */
export function isArch(name: unknown): name is Arch {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(ARCHS, name)
}

function posInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw new RangeError(`config.${what}: expected a positive integer, got ${JSON.stringify(v)}`)
  }
  return v
}

function nonNegInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`config.${what}: expected a non-negative integer, got ${JSON.stringify(v)}`)
  }
  return v
}

function oneOf<T extends string>(v: unknown, allowed: readonly T[], what: string): T {
  if (!allowed.includes(v as T)) {
    throw new TypeError(`config.${what}: expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`)
  }
  return v as T
}

function quad(v: unknown, what: string): [number, number, number, number] {
  if (!Array.isArray(v) || v.length !== 4) {
    throw new TypeError(`config.${what}: expected an array of 4 positive integers, got ${JSON.stringify(v)}`)
  }
  return v.map((x, i) => posInt(x, `${what}[${i}]`)) as [number, number, number, number]
}

/**
 * Resolves an architecture name or a config to a complete, validated config.
 * @throws TypeError for an unknown name or a field of the wrong kind, RangeError for a bad number.
 */
export function resolveConfig(arch: Arch | SEResNetConfig): ResolvedConfig {
  let c: SEResNetConfig
  if (typeof arch === 'string') {
    if (!isArch(arch)) {
      throw new TypeError(`arch: unknown architecture ${JSON.stringify(arch)}; expected one of ${ARCH_NAMES.join(', ')}`)
    }
    c = ARCHS[arch]
  } else if (arch !== null && typeof arch === 'object') {
    c = arch
  } else {
    throw new TypeError(`arch: expected an architecture name or an SEResNetConfig object, got ${arch === null ? 'null' : typeof arch}`)
  }
  const block = oneOf(c.block, ['basic', 'bottleneck'] as const, 'block')
  const stem = oneOf(c.stem ?? 'timm', ['timm', 'legacy', 'legacy3x3'] as const, 'stem')
  const keys = oneOf(c.keys ?? 'timm', ['timm', 'legacy'] as const, 'keys')
  const downsampleKernel = posInt(c.downsampleKernel ?? 1, 'downsampleKernel')
  const r: ResolvedConfig = {
    block,
    layers: quad(c.layers, 'layers'),
    channels: quad(c.channels ?? [64, 128, 256, 512], 'channels'),
    groups: posInt(c.groups ?? 1, 'groups'),
    baseWidth: posInt(c.baseWidth ?? 64, 'baseWidth'),
    bottleneckWidth: oneOf(c.bottleneckWidth ?? 'resnext', ['resnext', 'senet154'] as const, 'bottleneckWidth'),
    expansion: posInt(c.expansion ?? (block === 'basic' ? 1 : 4), 'expansion'),
    stem,
    stemWidth: posInt(c.stemWidth ?? 64, 'stemWidth'),
    stemMidWidth: posInt(c.stemMidWidth ?? 64, 'stemMidWidth'),
    strideOn: oneOf(c.strideOn ?? '3x3', ['3x3', '1x1'] as const, 'strideOn'),
    downsampleKernel,
    downsamplePadding: nonNegInt(c.downsamplePadding ?? Math.floor((downsampleKernel - 1) / 2), 'downsamplePadding'),
    lastBranchReLU: c.lastBranchReLU ?? false,
    se: oneOf(c.se ?? 'standard', ['standard', 'pre', 'post', 'identity', 'none'] as const, 'se'),
    seReduction: posInt(c.seReduction ?? 16, 'seReduction'),
    seWidth: oneOf(c.seWidth ?? 'timm', ['timm', 'legacy'] as const, 'seWidth'),
    seBias: c.seBias ?? true,
    keys,
    numClasses: posInt(c.numClasses ?? 1000, 'numClasses'),
    inChans: c.inChans ?? 3,
  }
  if (typeof r.lastBranchReLU !== 'boolean') throw new TypeError(`config.lastBranchReLU: expected a boolean, got ${JSON.stringify(r.lastBranchReLU)}`)
  if (typeof r.seBias !== 'boolean') throw new TypeError(`config.seBias: expected a boolean, got ${JSON.stringify(r.seBias)}`)
  if (r.inChans !== 3) throw new RangeError(`config.inChans: only 3 input channels are supported, got ${JSON.stringify(r.inChans)}`)
  if (r.block === 'basic' && (r.groups !== 1 || r.baseWidth !== 64)) {
    throw new RangeError(`config: a basic block supports only groups 1 and baseWidth 64, got groups ${r.groups}, baseWidth ${r.baseWidth}`)
  }
  if (r.stem === 'legacy3x3' && r.keys === 'timm') {
    throw new RangeError("config: stem 'legacy3x3' exists only with keys 'legacy' (timm names its deep stems differently)")
  }
  if (r.stem === 'timm' && r.keys === 'legacy') {
    throw new RangeError("config: keys 'legacy' (Cadene's layer0) require stem 'legacy' or 'legacy3x3'")
  }
  if (r.downsamplePadding * 2 > r.downsampleKernel) {
    throw new RangeError(`config.downsamplePadding: must be at most half the kernel (${r.downsampleKernel}), got ${r.downsamplePadding}`)
  }
  return r
}

/** Python's `int(v + d/2) // d * d`, at least d: timm's `make_divisible(v, d, round_limit=0)`. */
export function makeDivisible(v: number, divisor = 8): number {
  return Math.max(divisor, Math.floor(Math.trunc(v + divisor / 2) / divisor) * divisor)
}

/** Width of the SE bottleneck for `c` channels under the config's rule. */
export function seChannels(config: ResolvedConfig, c: number): number {
  if (config.seWidth === 'timm') return makeDivisible(c / config.seReduction, 8)
  const cr = Math.floor(c / config.seReduction)
  if (cr < 1) throw new RangeError(`config.seReduction: ${c} channels // ${config.seReduction} leaves an SE width of 0`)
  return cr
}
