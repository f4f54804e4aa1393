/**
 * The native model backend: a {@link Program} is compiled once into the addon's
 * `NativeModel` (weights copied and prepacked for the GEMM microkernels, so the
 * program's own arrays can be garbage collected), and forward passes run on the addon's
 * thread pool. `forward` copies its input and queues the pass on the pool; passes of one
 * model run one after another, each using every thread; queued passes of the same image
 * size run together as one batch of up to 8 images (`SENET_COALESCE`), each caller
 * getting exactly its own results.
 */
import { addon } from './addon'
import type { CompiledModel, ModelBackend, Program } from '../model/program'

type Shape = [number, number, number, number]

class NativeCompiledModel implements CompiledModel {
  private model: InstanceType<typeof addon.NativeModel> | null

  constructor(program: Program) {
    this.model = new addon.NativeModel(
      program.ops as never,
      program.numSlots,
      program.inChannels,
      program.numClasses,
      program.output,
    )
  }

  private live(): InstanceType<typeof addon.NativeModel> {
    if (!this.model) throw new Error('the model has been disposed')
    return this.model
  }

  forwardSync(x: Float32Array, shape: Shape): Float32Array {
    return this.live().forwardSync(x, shape[0], shape[1], shape[2], shape[3])
  }

  forward(x: Float32Array, shape: Shape): Promise<Float32Array> {
    try {
      return this.live().forward(x, shape[0], shape[1], shape[2], shape[3])
    } catch (e) {
      return Promise.reject(e)
    }
  }

  dispose(): void {
    this.model?.dispose()
    this.model = null
  }
}

/** Compiles programs for the native addon. */
export const nativeBackend: ModelBackend = {
  name: 'native',
  compile: (program) => new NativeCompiledModel(program),
}
