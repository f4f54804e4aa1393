/**
 * The contract between model composition (TypeScript, `lib/model/`) and the executors
 * that run a forward pass (the native addon and the pure-JS backend).
 *
 * A model is compiled to a straight-line {@link Program}: a list of {@link Op}s over
 * numbered activation slots. BatchNorm is already folded into the convolutions' weights
 * and biases, so an executor sees only the operations below. All activations are NCHW,
 * float32. Shapes are not stored: each executor infers them from the input shape (the
 * rules are given per op), so one program serves every input size and batch.
 *
 * Rules every program obeys (the builder guarantees them, executors may rely on them):
 * - slot 0 holds the input [n, inChannels, h, w]; `output` holds [n, numClasses];
 * - an op's output slot `y` is different from each of its input slots (no op runs in
 *   place), but slots are reused across ops once their previous value is dead;
 * - weights are never mutated by an executor.
 */

/** Index of an activation buffer. */
export type Slot = number

/**
 * 2-D convolution + bias (folded BatchNorm), then optionally `+ residual`, then
 * optionally ReLU: `y = act(conv(x, weight) + bias [+ residual])`.
 * x: [n, cin, h, w] → y: [n, cout, oh, ow], oh = floor((h + 2·pad − kh) / stride) + 1
 * (likewise ow). `weight` is [cout, cin/groups, kh, kw] (PyTorch order), `bias` [cout].
 * `residual`, when present, has y's shape.
 */
export interface ConvOp {
  op: 'conv'
  x: Slot
  y: Slot
  cin: number
  cout: number
  kh: number
  kw: number
  stride: number
  pad: number
  groups: number
  weight: Float32Array
  bias: Float32Array
  residual?: Slot
  relu: boolean
}

/**
 * Max pooling k×k with stride; padded positions are ignored (as −∞), as in PyTorch. oh = floor or ceil((h + 2·pad − k) / stride) + 1; with `ceil`, a last window
 * that would start inside the right/bottom padding only is dropped (PyTorch's rule).
 */
export interface MaxPoolOp {
  op: 'maxpool'
  x: Slot
  y: Slot
  k: number
  stride: number
  pad: number
  ceil: boolean
}

/**
 * Squeeze-and-Excitation: g = sigmoid(w2 · relu(w1 · mean_hw(x) + b1) + b2), then
 * `y = act(x · g [+ residual])`. w1 is [cr, c], w2 is [c, cr]; biases optional.
 * x, residual, y: [n, c, h, w].
 */
export interface SEOp {
  op: 'se'
  x: Slot
  y: Slot
  c: number
  cr: number
  w1: Float32Array
  b1?: Float32Array
  w2: Float32Array
  b2?: Float32Array
  residual?: Slot
  relu: boolean
}

/** y = act(a + b); a, b, y of one shape. */
export interface AddOp {
  op: 'add'
  a: Slot
  b: Slot
  y: Slot
  relu: boolean
}

/** Global average pool: [n, c, h, w] → [n, c] (stored as [n, c, 1, 1]). */
export interface GlobalAvgPoolOp {
  op: 'gap'
  x: Slot
  y: Slot
}

/** Fully connected: x [n, cin] (any [n, cin, 1, 1]) → y [n, cout]; weight [cout, cin]. */
export interface LinearOp {
  op: 'linear'
  x: Slot
  y: Slot
  cin: number
  cout: number
  weight: Float32Array
  bias: Float32Array
}

export type Op = ConvOp | MaxPoolOp | SEOp | AddOp | GlobalAvgPoolOp | LinearOp

export interface Program {
  ops: Op[]
  /** Slots are 0 .. numSlots-1. */
  numSlots: number
  inChannels: number
  numClasses: number
  /** The slot holding the logits after the last op. */
  output: Slot
}

/** What a backend turns a program into. Inputs reaching it are already validated. */
export interface CompiledModel {
  /** Runs on the calling thread. x: [n, inChannels, h, w] NCHW. Returns n·numClasses logits. */
  forwardSync(x: Float32Array, shape: [number, number, number, number]): Float32Array
  /** Same result; the work runs off the JS thread where the backend can do that. */
  forward(x: Float32Array, shape: [number, number, number, number]): Promise<Float32Array>
  /** Frees the compiled weights; later calls must not happen (the caller checks). */
  dispose(): void
}

/** An executor family: the native addon, or pure JS. */
export interface ModelBackend {
  readonly name: 'native' | 'js'
  compile(program: Program): CompiledModel
}
