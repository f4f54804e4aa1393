/**
 * Matching a safetensors file against the state_dict a config expects.
 *
 * Names must match exactly (timm's or Cadene's, per `config.keys`); `*.num_batches_tracked`
 * is ignored whether present or not. Every problem is collected first and reported in
 * one error, so a user sees at once that, say, a legacy_ checkpoint was given to a timm
 * architecture.
 *
 * @packageDocumentation
 */

import type { ResolvedConfig } from './config'
import { paramSpecs, type ParamSource } from './build'
import { F32_CONVERTIBLE_DTYPES, type SafetensorsFile } from './safetensors'

/** The result of {@link matchWeights}. */
export interface MatchedWeights {
  /** The config with `numClasses` set from the file (or the option). */
  config: ResolvedConfig
  /** Loads each tensor as a fresh float32 array on demand (safe to fold in place). */
  source: ParamSource
}

const IGNORED = '.num_batches_tracked'
const MAX_LISTED = 8

function list(items: string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ')
  return items.length > MAX_LISTED ? `${shown}, … and ${items.length - MAX_LISTED} more` : shown
}

const fmt = (shape: readonly number[]): string => `[${shape.join(',')}]`

/**
 * Checks that `file` holds exactly the tensors of `config` (names, shapes, float dtypes).
 *
 * `numClasses` is taken from the file's classifier weight (`fc.weight` or
 * `last_linear.weight`) unless `opts.numClasses` is given, in which case the file must
 * agree with it.
 * @param label names the architecture in error messages.
 * @throws RangeError "weights do not match <label>: missing N (…), unexpected N (…),
 *   mis-shaped N (name: expected [..], got [..]), wrong dtype N (…)".
 */
export function matchWeights(
  config: ResolvedConfig,
  file: SafetensorsFile,
  label: string,
  opts: { numClasses?: number } = {},
): MatchedWeights {
  const head = config.keys === 'legacy' ? 'last_linear.weight' : 'fc.weight'
  let numClasses = opts.numClasses
  if (numClasses === undefined) {
    const shape = file.has(head) ? file.info(head).shape : undefined
    numClasses = shape && shape.length === 2 && Number.isSafeInteger(shape[0]) && shape[0] >= 1 ? shape[0] : config.numClasses
  }
  const resolved: ResolvedConfig = { ...config, numClasses }
  const expected = new Map<string, number[]>()
  for (const p of paramSpecs(resolved)) if (!p.name.endsWith(IGNORED)) expected.set(p.name, p.shape)

  const missing: string[] = []
  const misShaped: string[] = []
  const badDtype: string[] = []
  for (const [name, shape] of expected) {
    if (!file.has(name)) {
      missing.push(name)
      continue
    }
    const info = file.info(name)
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      misShaped.push(`${name}: expected ${fmt(shape)}, got ${fmt(info.shape)}`)
    } else if (!F32_CONVERTIBLE_DTYPES.includes(info.dtype)) {
      badDtype.push(`${name}: ${info.dtype}, expected one of ${F32_CONVERTIBLE_DTYPES.join('/')}`)
    }
  }
  const unexpected = file.names().filter((n) => !expected.has(n) && !n.endsWith(IGNORED))
  const parts: string[] = []
  if (missing.length) parts.push(`missing ${missing.length} (${list(missing)})`)
  if (unexpected.length) parts.push(`unexpected ${unexpected.length} (${list(unexpected)})`)
  if (misShaped.length) parts.push(`mis-shaped ${misShaped.length} (${list(misShaped)})`)
  if (badDtype.length) parts.push(`wrong dtype ${badDtype.length} (${list(badDtype)})`)
  if (parts.length) {
    throw new RangeError(`weights do not match ${label}: ${parts.join(', ')}`)
  }
  return {
    config: resolved,
    source: { get: (name: string) => (expected.has(name) ? file.getF32(name) : undefined) },
  }
}
