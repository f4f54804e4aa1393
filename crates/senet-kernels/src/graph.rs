//! A compiled forward pass: the straight-line program of `lib/model/program.ts`, with
//! every convolution's weights prepacked once, run on the one kernel pool.
//!
//! Activations live in numbered slots. For each input shape the executor infers every
//! op's output shape once, sizes each slot for the largest value it ever holds, and keeps
//! those buffers in a [`Workspace`] that is reused by later calls with the same shape, so
//! a steady stream of forwards allocates nothing but its result.
//!
//! Activations are channel-blocked (nChw16c, see `nn::blocked`) from the stem to the
//! head: the stem reads the NCHW input directly, the global average pool returns plain
//! [N, C], so no layout conversion pass runs in a normal SE-ResNet. Programs of other
//! shapes still work: a value is converted where an op needs the other layout.
//!
//! SE blocks: the squeeze is summed by the conv that writes the SE input while its tiles
//! are in L1 (`squeeze_for`), and the scale pass overwrites that input in place
//! (`in_place`). An SE op whose input comes from a dense 1×1/1 conv (conv3 of a
//! bottleneck) runs that conv itself (`gated_by`): the means of the conv's output are
//! the conv applied to the means of its input, and the SE block's first FC layer is
//! folded into the conv at load ([`SeFold`]), so the gates come from the means of the
//! conv's input in one small product before the conv runs, and its tiles apply gate,
//! residual and ReLU while in L1, with no scale pass (see [`gate_in_epilogue`]).

use crate::nn::blocked as blk;
use crate::nn::Conv;
use crate::nn;
use crate::se::{self, ScaleIo, SeWeights};
use crate::aligned::Aligned;
use crate::{pool, Shape4};
use std::sync::Mutex;

/// One operation (semantics as in `program.ts`). Slots are indices into the workspace.
/// (Built once per model, so the size of the conv variant does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Op {
    Conv { x: usize, y: usize, conv: Conv, residual: Option<usize>, relu: bool },
    MaxPool { x: usize, y: usize, k: usize, stride: usize, pad: usize, ceil: bool },
    Se {
        x: usize,
        y: usize,
        c: usize,
        cr: usize,
        w1: Vec<f32>,
        b1: Option<Vec<f32>>,
        w2: Vec<f32>,
        b2: Option<Vec<f32>>,
        residual: Option<usize>,
        relu: bool,
    },
    Add { a: usize, b: usize, y: usize, relu: bool },
    Gap { x: usize, y: usize },
    Linear { x: usize, y: usize, cin: usize, cout: usize, weight: Vec<f32>, bias: Vec<f32> },
}

/// `SENET_PROFILE=1`: every forward prints per-op times to stderr (a development aid;
/// timing adds one clock read per op).
fn profiling() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SENET_PROFILE").is_ok_and(|v| v == "1"))
}

fn report(times: &[(String, f64)]) {
    let total: f64 = times.iter().map(|t| t.1).sum();
    let mut by: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for (d, ms) in times {
        let kind = d.split(' ').next().unwrap_or("");
        let e = by.entry(kind).or_default();
        e.0 += ms;
        e.1 += 1;
    }
    let mut out = format!("senet profile: {total:.2} ms total\n");
    for (k, (ms, n)) in &by {
        out += &format!("  {k:<8} {n:>4} ops {ms:>9.2} ms {:>5.1}%\n", 100.0 * ms / total);
    }
    let mut sorted: Vec<&(String, f64)> = times.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (d, ms) in sorted.iter().take(if std::env::var("SENET_PROFILE_ALL").is_ok() { usize::MAX } else { 12 }) {
        out += &format!("  {ms:>8.3} ms  {d}\n");
    }
    eprint!("{out}");
}

impl Op {
    fn describe(&self, cur: &[Shape4], ys: Shape4) -> String {
        let sh = |s: Shape4| format!("[{},{},{},{}]", s.n, s.c, s.h, s.w);
        match self {
            Op::Conv { x, conv, residual, .. } => format!(
                "conv {}->{} {} res={}",
                sh(cur[*x]),
                sh(ys),
                conv.describe(),
                residual.is_some()
            ),
            _ => format!("{} {}->{}", self.name(), sh(cur[self.inputs()[0]]), sh(ys)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::MaxPool { .. } => "maxpool",
            Op::Se { .. } => "se",
            Op::Add { .. } => "add",
            Op::Gap { .. } => "gap",
            Op::Linear { .. } => "linear",
        }
    }
    /// Memory order of the op's output.
    fn out_lay(&self) -> Lay {
        match self {
            Op::Gap { .. } | Op::Linear { .. } => Lay::Plain,
            _ => Lay::Blk,
        }
    }

    fn output(&self) -> usize {
        match *self {
            Op::Conv { y, .. }
            | Op::MaxPool { y, .. }
            | Op::Se { y, .. }
            | Op::Add { y, .. }
            | Op::Gap { y, .. }
            | Op::Linear { y, .. } => y,
        }
    }
    fn inputs(&self) -> Vec<usize> {
        match *self {
            Op::Conv { x, residual, .. } | Op::Se { x, residual, .. } => {
                std::iter::once(x).chain(residual).collect()
            }
            Op::MaxPool { x, .. } | Op::Gap { x, .. } | Op::Linear { x, .. } => vec![x],
            Op::Add { a, b, .. } => vec![a, b],
        }
    }
}

/// Activation buffers for one input shape.
pub struct Workspace {
    input: Shape4,
    /// Shape of each op's output, in op order.
    shapes: Vec<Shape4>,
    /// Buffers. Slot `i`'s value lives in `slots[map[i]]`: an in-place SE op (see
    /// [`Model::in_place`]) scales its input's buffer and swaps the two slots' buffers.
    slots: Vec<Aligned>,
    map: Vec<usize>,
    /// Per SE op fed by a squeezing conv: its channel means [n · c].
    means: Vec<Vec<f32>>,
}

/// An SE block's first FC layer folded into the dense 1×1 conv whose output it
/// squeezes. The squeeze of `y = W·x + b` is `W·mean(x) + b` (the mean over pixels is
/// linear), so `w1·mean(y) + b1 = (w1·W)·mean(x) + (w1·b + b1)`: with `w1·W` `[cr, cin]`
/// and `w1·b + b1` computed once (in f64, rounded once), a gated SE op gets its hidden
/// layer from the means of the conv's input in one small product, instead of projecting
/// them through W (`cout × cin` weights, read from memory at batch 1) and then applying
/// w1. Same function, other roundings (logits move by ~1e-6).
struct SeFold {
    /// `[cr, cin]` row-major.
    w1: Vec<f32>,
    /// `[cr]`.
    b1: Vec<f32>,
    cin: usize,
}

impl SeFold {
    fn new(w1: &[f32], b1: Option<&[f32]>, c: usize, cr: usize, conv: &Conv) -> Option<SeFold> {
        let (w, b) = conv.dense_matrix()?;
        let cin = conv.cin();
        if conv.cout() != c || w.len() != c * cin {
            return None;
        }
        let rows: Vec<(Vec<f32>, f32)> = pool::install(|| {
            use rayon::prelude::*;
            (0..cr)
                .into_par_iter()
                .map(|j| {
                    let mut acc = vec![0.0f64; cin];
                    let mut bias = b1.map_or(0.0, |b1| b1[j] as f64);
                    for (k, wk) in w.chunks_exact(cin).enumerate() {
                        let a = w1[j * c + k] as f64;
                        bias += a * b[k] as f64;
                        for (s, &v) in acc.iter_mut().zip(wk) {
                            *s += a * v as f64;
                        }
                    }
                    (acc.into_iter().map(|v| v as f32).collect(), bias as f32)
                })
                .collect()
        });
        let (w1, b1): (Vec<Vec<f32>>, Vec<f32>) = rows.into_iter().unzip();
        Some(SeFold { w1: w1.concat(), b1, cin })
    }
}

/// Memory order of a slot's current value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lay {
    /// NCHW (and [N, C] vectors).
    Plain,
    /// nChw16c, channels zero-padded to a multiple of 16.
    Blk,
}

/// A slot's current value.
#[derive(Clone, Copy)]
struct Val<'a> {
    buf: &'a [f32],
    s: Shape4,
    lay: Lay,
}

impl<'a> Val<'a> {
    fn raw(&self) -> &'a [f32] {
        match self.lay {
            Lay::Plain => &self.buf[..self.s.len().expect("checked")],
            Lay::Blk => &self.buf[..blk::blk16_len(self.s)],
        }
    }
    /// The value in nChw16c order: borrowed, or converted (only for programs whose ops
    /// read a plain value as an activation, which no built SE-ResNet does).
    fn blocked(&self) -> std::borrow::Cow<'a, [f32]> {
        match self.lay {
            Lay::Blk => std::borrow::Cow::Borrowed(self.raw()),
            Lay::Plain => {
                let mut y = vec![0.0f32; blk::blk16_len(self.s)];
                blk::nchw_to_blk16(self.raw(), self.s, &mut y);
                std::borrow::Cow::Owned(y)
            }
        }
    }
    /// The value in NCHW order: borrowed, or converted.
    fn plain(&self) -> std::borrow::Cow<'a, [f32]> {
        match self.lay {
            Lay::Plain => std::borrow::Cow::Borrowed(self.raw()),
            Lay::Blk => {
                let mut y = vec![0.0f32; self.s.len().expect("checked")];
                blk::blk16_to_nchw(self.raw(), self.s, &mut y);
                std::borrow::Cow::Owned(y)
            }
        }
    }
}

/// A validated, compiled program.
pub struct Model {
    ops: Vec<Op>,
    num_slots: usize,
    in_channels: usize,
    num_classes: usize,
    output: usize,
    /// For a conv whose output is next read as the input of an SE op: that op's index.
    /// The conv then also computes the channel means (the squeeze) while its output
    /// tiles are in L1, and the SE op skips its own pass over the activation.
    squeeze_for: Vec<Option<usize>>,
    /// Per op: an SE op that scales its input's buffer in place (the input, a blocked
    /// value, is read by no later op), then hands that buffer to its output slot. That
    /// saves the read-for-ownership of a separate output buffer: a third of the scale
    /// pass's memory traffic.
    in_place: Vec<bool>,
    /// Per SE op fused with the conv that writes its input (see [`Model::gate_pair`]):
    /// that conv's index. The SE op then runs the conv itself, with the gates applied
    /// in the conv's epilogue, and the conv's own position does nothing (`skipped`).
    gated_by: Vec<Option<usize>>,
    skipped: Vec<bool>,
    /// Per gated SE op: its first FC layer folded into its conv ([`SeFold`]).
    folds: Vec<Option<SeFold>>,
    /// Op 0 is the only reader of the program's input (a conv on it, as every SE-ResNet's
    /// stem): it then reads the caller's array directly instead of a copy in slot 0
    /// (batch 1: 600 KB, ~0.15 ms of a 37 ms forward, copied from memory the caller
    /// left cold).
    direct_input: bool,
    /// Workspaces kept for reuse (at most [`Model::keep`]).
    spare: Mutex<Vec<Workspace>>,
}

impl Model {
    /// Spare workspaces kept: a batched forward uses its own plus one batch-1 workspace
    /// per pool thread for the per-image phase; one more for an alternating shape.
    fn keep() -> usize {
        pool::num_threads() + 2
    }

    /// Checks the program's structure: slots in range, no op writing one of its inputs,
    /// SE/linear weight lengths, and that the output slot is written by some op.
    pub fn new(ops: Vec<Op>, num_slots: usize, in_channels: usize, num_classes: usize, output: usize) -> Result<Model, String> {
        if ops.is_empty() {
            return Err("program has no ops".into());
        }
        if in_channels == 0 || num_classes == 0 {
            return Err("inChannels and numClasses must be positive".into());
        }
        if output >= num_slots {
            return Err(format!("output slot {output} out of range (numSlots {num_slots})"));
        }
        for (i, op) in ops.iter().enumerate() {
            let y = op.output();
            for s in op.inputs().into_iter().chain([y]) {
                if s >= num_slots {
                    return Err(format!("op {i} ({}): slot {s} out of range (numSlots {num_slots})", op.name()));
                }
            }
            if op.inputs().contains(&y) {
                return Err(format!("op {i} ({}): output slot {y} is also an input", op.name()));
            }
            match op {
                Op::Se { c, cr, w1, b1, w2, b2, .. } => {
                    SeWeights::new(w1, b1.as_deref(), w2, b2.as_deref(), *c, *cr)
                        .map_err(|e| format!("op {i} (se): {e}"))?;
                }
                Op::Linear { cin, cout, weight, bias, .. }
                    if *cin == 0 || *cout == 0 || weight.len() != cin * cout || bias.len() != *cout =>
                {
                    return Err(format!(
                        "op {i} (linear): weight must be {cout}×{cin} and bias {cout}, got {} and {}",
                        weight.len(),
                        bias.len()
                    ));
                }
                Op::MaxPool { k, stride, .. } if *k == 0 || *stride == 0 => {
                    return Err(format!("op {i} (maxpool): k and stride must be positive"));
                }
                _ => {}
            }
        }
        if !ops.iter().any(|op| op.output() == output) {
            return Err(format!("no op writes the output slot {output}"));
        }
        let in_place: Vec<bool> = (0..ops.len()).map(|i| Self::can_scale_in_place(&ops, i, output)).collect();
        let mut gated_by = vec![None; ops.len()];
        let mut skipped = vec![false; ops.len()];
        let mut folds: Vec<Option<SeFold>> = (0..ops.len()).map(|_| None).collect();
        for k in 0..ops.len() {
            let Some(j) = Self::gate_pair(&ops, &in_place, &skipped, k) else { continue };
            let fold = match (&ops[k], &ops[j]) {
                (Op::Se { c, cr, w1, b1, .. }, Op::Conv { conv, .. }) => SeFold::new(w1, b1.as_deref(), *c, *cr, conv),
                _ => None,
            };
            if fold.is_some() {
                (gated_by[k], skipped[j], folds[k]) = (Some(j), true, fold);
            }
        }
        // The channel means an SE op needs, computed by the conv that writes them while
        // its tiles are in L1: an SE op's input's (its last writer before the op), or for
        // a gated SE op, its conv's input's (the last writer before that conv).
        let mut squeeze_for = vec![None; ops.len()];
        for (k, op) in ops.iter().enumerate() {
            let (slot, before) = match (op, gated_by[k]) {
                (Op::Se { x, .. }, None) => (*x, k),
                (Op::Se { .. }, Some(j)) => (ops[j].inputs()[0], j),
                _ => continue,
            };
            if let Some(w) = (0..before).rev().find(|&w| ops[w].output() == slot) {
                if matches!(ops[w], Op::Conv { .. }) && !skipped[w] && squeeze_for[w].is_none() {
                    squeeze_for[w] = Some(k);
                }
            }
        }
        let direct_input = Self::only_op0_reads_input(&ops, &skipped, output);
        // Packing and folding freed large transient buffers, partly on pool threads.
        crate::mem::release_free_heap();
        Ok(Model { ops, num_slots, in_channels, num_classes, output, squeeze_for, in_place, gated_by, skipped, folds, direct_input, spare: Mutex::new(Vec::new()) })
    }

    /// Whether op 0 is a conv reading slot 0 (the input) as its activation, and no
    /// other op reads slot 0 before an op overwrites it, and the output is not slot 0.
    fn only_op0_reads_input(ops: &[Op], skipped: &[bool], output: usize) -> bool {
        let op0_ok = matches!(ops[0], Op::Conv { x: 0, residual, .. } if residual != Some(0)) && !skipped[0];
        if !op0_ok || output == 0 {
            return false;
        }
        for op in &ops[1..] {
            if op.inputs().contains(&0) {
                return false;
            }
            if op.output() == 0 {
                break;
            }
        }
        true
    }

    /// Whether SE op `i` may overwrite its input: a blocked value (written by an op with
    /// blocked output, not the caller's input), not also its residual, and dead after
    /// it (no later op reads it before it is overwritten; not the program's output
    /// unless a later op overwrites it first: the slot that ends up holding the logits
    /// often carries activations before that, and refusing those cost 5 of
    /// seresnet50's 16 SE ops their in-place scale).
    fn can_scale_in_place(ops: &[Op], i: usize, output: usize) -> bool {
        let Op::Se { x, residual, .. } = ops[i] else { return false };
        if residual == Some(x) {
            return false;
        }
        let blocked = (0..i).rev().find(|&j| ops[j].output() == x).is_some_and(|j| ops[j].out_lay() == Lay::Blk);
        if !blocked {
            return false;
        }
        for op in &ops[i + 1..] {
            if op.inputs().contains(&x) {
                return false;
            }
            if op.output() == x {
                return true;
            }
        }
        x != output
    }

    /// Whether SE op `k` can run fused with the conv `j` that writes its input: returns
    /// `j`. The conv must be a dense 1×1/1 layer without residual or ReLU
    /// ([`Conv::gate_fusable`]), so that the channel means of its output are the layer
    /// applied to those of its input, and the gates can be known before the conv runs
    /// and applied in its epilogue: `y = act((conv(a) + b) · gate + residual)` in one
    /// pass, with no separate scale pass over the activation. The SE op must scale in
    /// place (its input dead after it, [`Model::can_scale_in_place`]): the fused op
    /// writes the buffer the conv would have written and hands it to the SE output as an
    /// in-place SE op does. Between the two, no op may read the conv's output or
    /// overwrite the conv's input, since the conv now runs at the SE op's position.
    fn gate_pair(ops: &[Op], in_place: &[bool], skipped: &[bool], k: usize) -> Option<usize> {
        let Op::Se { x: t, c, residual, .. } = ops[k] else { return None };
        if !in_place[k] || residual == Some(t) {
            return None;
        }
        let j = (0..k).rev().find(|&j| ops[j].output() == t)?;
        let Op::Conv { x: a, ref conv, residual: None, relu: false, .. } = ops[j] else { return None };
        if skipped[j] || !conv.gate_fusable() || conv.cout() != c {
            return None;
        }
        for (i, op) in ops.iter().enumerate().take(k).skip(j + 1) {
            let scales_a = in_place[i] && matches!(op, Op::Se { x, .. } if *x == a);
            if op.inputs().contains(&t) || op.output() == a || scales_a || skipped[i] {
                return None;
            }
        }
        Some(j)
    }

    /// Slots op `i` reads where it runs: a skipped conv none, a gated SE op its conv's
    /// input (and its residual).
    fn reads(&self, i: usize) -> Vec<usize> {
        if self.skipped[i] {
            return Vec::new();
        }
        match (&self.ops[i], self.gated_by[i]) {
            (Op::Se { residual, .. }, Some(j)) => std::iter::once(self.ops[j].inputs()[0]).chain(*residual).collect(),
            (op, _) => op.inputs(),
        }
    }

    /// The conv of a gated SE op (`j` from `gated_by`).
    fn gated_conv(&self, j: usize) -> &Conv {
        match &self.ops[j] {
            Op::Conv { conv, .. } => conv,
            _ => unreachable!("gated_by points at convs only"),
        }
    }

    /// How many SE ops run fused with their conv (diagnostics and tests).
    pub fn gated_count(&self) -> usize {
        self.gated_by.iter().filter(|g| g.is_some()).count()
    }

    /// The buffer op `i` writes: its output slot's, or an in-place SE op's input's.
    fn write_buffer(&self, i: usize, map: &[usize]) -> usize {
        match self.ops[i] {
            Op::Se { x, .. } if self.in_place[i] => map[x],
            ref op => map[op.output()],
        }
    }

    /// Slot → buffer after op `i`: an in-place SE op hands its input's buffer to its
    /// output slot (and the output slot's old buffer to the input slot).
    fn advance_map(&self, i: usize, map: &mut [usize]) {
        if let (true, Op::Se { x, y, .. }) = (self.in_place[i], &self.ops[i]) {
            map.swap(*x, *y);
        }
    }

    /// Slot → buffer after ops `0..k`, starting from the identity.
    fn map_after(&self, k: usize) -> Vec<usize> {
        let mut map: Vec<usize> = (0..self.num_slots).collect();
        for i in 0..k {
            self.advance_map(i, &mut map);
        }
        map
    }

    /// Whether op 0 reads the caller's input array in place (diagnostics and tests).
    pub fn reads_input_in_place(&self) -> bool {
        self.direct_input
    }

    /// How many SE ops scale their input in place (diagnostics and tests).
    pub fn in_place_count(&self) -> usize {
        self.in_place.iter().filter(|&&b| b).count()
    }

    /// Whether SE op `k` gets its channel means from the conv that wrote its input.
    fn squeeze_fused(&self, k: usize) -> bool {
        self.squeeze_for.contains(&Some(k))
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Output shape of every op for `input`, or an error naming the op that cannot run
    /// (input too small for a kernel, channel mismatch, slot read before it is written).
    pub fn infer_shapes(&self, input: Shape4) -> Result<Vec<Shape4>, String> {
        if input.c != self.in_channels {
            return Err(format!("input has {} channels, the model takes {}", input.c, self.in_channels));
        }
        let mut cur: Vec<Option<Shape4>> = vec![None; self.num_slots];
        cur[0] = Some(input);
        let mut shapes = Vec::with_capacity(self.ops.len());
        for (i, op) in self.ops.iter().enumerate() {
            let get = |s: usize| cur[s].ok_or_else(|| format!("op {i} ({}) reads slot {s} before it is written", op.name()));
            let err = |m: String| format!("op {i} ({}): {m}", op.name());
            let out = match op {
                Op::Conv { x, conv, residual, .. } => {
                    let xs = get(*x)?;
                    if xs.c != conv.cin() {
                        return Err(err(format!("input has {} channels, expected {}", xs.c, conv.cin())));
                    }
                    let (oh, ow) = conv
                        .output_hw(xs.h, xs.w)
                        .ok_or_else(|| err(format!("input {}×{} is smaller than the kernel", xs.h, xs.w)))?;
                    let ys = Shape4::new(xs.n, conv.cout(), oh, ow);
                    if let Some(r) = residual {
                        if get(*r)? != ys {
                            return Err(err("residual shape differs from the output's".into()));
                        }
                    }
                    ys
                }
                Op::MaxPool { x, k, stride, pad, ceil, .. } => {
                    let xs = get(*x)?;
                    let oh = nn::pool_output_size(xs.h, *k, *stride, *pad, *ceil);
                    let ow = nn::pool_output_size(xs.w, *k, *stride, *pad, *ceil);
                    match (oh, ow) {
                        (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Shape4::new(xs.n, xs.c, oh, ow),
                        _ => return Err(err(format!("input {}×{} is smaller than the window", xs.h, xs.w))),
                    }
                }
                Op::Se { x, c, residual, .. } => {
                    let xs = get(*x)?;
                    if xs.c != *c {
                        return Err(err(format!("input has {} channels, expected {c}", xs.c)));
                    }
                    if let Some(r) = residual {
                        if get(*r)? != xs {
                            return Err(err("residual shape differs from the input's".into()));
                        }
                    }
                    xs
                }
                Op::Add { a, b, .. } => {
                    let (sa, sb) = (get(*a)?, get(*b)?);
                    if sa != sb {
                        return Err(err("operands differ in shape".into()));
                    }
                    sa
                }
                Op::Gap { x, .. } => {
                    let xs = get(*x)?;
                    Shape4::new(xs.n, xs.c, 1, 1)
                }
                Op::Linear { x, cin, cout, .. } => {
                    let xs = get(*x)?;
                    if xs.c * xs.h * xs.w != *cin {
                        return Err(err(format!("input has {} features, expected {cin}", xs.c * xs.h * xs.w)));
                    }
                    Shape4::new(xs.n, *cout, 1, 1)
                }
            };
            cur[op.output()] = Some(out);
            shapes.push(out);
        }
        match cur[self.output] {
            Some(s) if s.c * s.h * s.w == self.num_classes => Ok(shapes),
            Some(s) => Err(format!("output has {} values per image, expected numClasses = {}", s.c * s.h * s.w, self.num_classes)),
            None => Err("the output slot is never written".into()),
        }
    }

    fn workspace(&self, input: Shape4) -> Result<Workspace, String> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = spare.iter().position(|w| w.input == input) {
            return Ok(spare.swap_remove(i));
        }
        drop(spare);
        let shapes = self.infer_shapes(input)?;
        // Buffer sizes: the largest value each holds, following the in-place swaps.
        let mut size = vec![0usize; self.num_slots];
        size[0] = input.len().ok_or("input shape overflows")?;
        let mut map: Vec<usize> = (0..self.num_slots).collect();
        for (i, s) in shapes.iter().enumerate() {
            s.len().ok_or("activation shape overflows")?;
            // Blocked values are padded to 16 channels; plain ones are not larger.
            let b = self.write_buffer(i, &map);
            size[b] = size[b].max(blk::blk16_len(*s));
            self.advance_map(i, &mut map);
        }
        // 64-byte aligned: the blocked kernels lose ~10% on unaligned activations.
        let slots = size.iter().map(|&n| Aligned::zeroed(n)).collect();
        let means = self
            .ops
            .iter()
            .enumerate()
            .map(|(k, op)| match (op, self.gated_by[k]) {
                (Op::Se { .. }, Some(j)) => vec![0.0f32; input.n * self.gated_conv(j).cin()],
                (Op::Se { c, .. }, None) => vec![0.0f32; input.n * c],
                _ => Vec::new(),
            })
            .collect();
        let map = (0..self.num_slots).collect();
        Ok(Workspace { input, shapes, slots, map, means })
    }

    fn give_back(&self, ws: Workspace) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() >= Self::keep() {
            spare.remove(0);
        }
        spare.push(ws);
    }

    /// Runs the program on `x` (NCHW, shape `s`) and returns `n · numClasses` logits.
    /// Safe to call concurrently: each call takes its own workspace.
    ///
    /// A batch of several images runs in two phases (see [`Model::split_point`]): the
    /// ops before the split run image by image, each image wholly on one pool thread
    /// (its activations stay in that core's cache, the SE scale pass reads them back
    /// from there, and no op waits for the other thread), and the rest of the program
    /// runs on the whole batch, whose weight-heavy late layers then read each weight
    /// once per batch. Both phases compute exactly what a single pass would: every
    /// kernel's result is independent of how its work is split.
    pub fn forward(&self, x: &[f32], s: Shape4) -> Result<Vec<f32>, String> {
        self.forward_split(x, s, Split::from_env())
    }

    /// [`Model::forward`] with an explicit [`Split`] (tests and benchmarks; the result
    /// is the same for every split, bit for bit).
    pub fn forward_split(&self, x: &[f32], s: Shape4, split: Split) -> Result<Vec<f32>, String> {
        self.forward_gate(x, s, split, se_gate_override())
    }

    /// [`Model::forward_split`] with the gated SE ops' order given (tests: `Some(false)`
    /// runs them unfused, conv then squeeze, excitation and scale; `None` as
    /// [`Model::forward`] decides). Both orders compute the same function, with other
    /// roundings.
    pub fn forward_gate(&self, x: &[f32], s: Shape4, split: Split, gate: Option<bool>) -> Result<Vec<f32>, String> {
        if Some(x.len()) != s.len() {
            return Err(format!("input length {} does not match its shape", x.len()));
        }
        let mut ws = self.workspace(s)?;
        ws.map = (0..self.num_slots).collect();
        let k = self.split_point(&ws, split);
        let logits = pool::install(|| {
            let mut times = Vec::new();
            let mut st = State::new(self.num_slots, s, gate);
            let mut input = None;
            if k > 0 {
                self.per_image(x, &mut ws, k, &mut st, &mut times)?;
            } else if self.direct_input {
                input = Some(x);
            } else {
                let n_in = x.len();
                ws.slots[ws.map[0]].as_mut_slice()[..n_in].copy_from_slice(x);
            }
            // The batched ops with the pool's threads held spinning between ops (the
            // per-image phase keeps one image per thread and needs no team).
            pool::team(|| self.exec(&mut ws, k..self.ops.len(), &mut st, &mut times, input));
            if profiling() {
                report(&times);
            }
            Ok::<_, String>(self.logits(&ws, &st))
        });
        self.give_back(ws);
        logits
    }

    /// How many leading ops run image by image for this batch (0: none).
    fn split_point(&self, ws: &Workspace, split: Split) -> usize {
        if ws.input.n < 2 {
            return 0;
        }
        let hw_limit = match split {
            Split::Batch => return 0,
            Split::Images => return self.ops.len(),
            Split::Ops(k) => return k.min(self.ops.len()),
            Split::Pixels(p) => p,
        };
        ws.shapes.iter().position(|y| y.h * y.w < hw_limit).unwrap_or(self.ops.len())
    }

    /// Phase one of [`Model::forward`]: ops `0..k` for each image on its own batch-1
    /// workspace, then every slot that a later op (or the result) reads is copied into
    /// that image's part of the batch workspace `ws`. Leaves `st` describing `ws` as a
    /// single pass over ops `0..k` would.
    fn per_image(&self, x: &[f32], ws: &mut Workspace, k: usize, st: &mut State, times: &mut Vec<(String, f64)>) -> Result<(), String> {
        let s = ws.input;
        let one = Shape4::new(1, s.c, s.h, s.w);
        let gate = st.gate;
        let per_in = one.len().expect("checked");
        // The state after ops 0..k, for the batch and per image.
        for (op, &ys) in self.ops[..k].iter().zip(&ws.shapes) {
            st.cur[op.output()] = ys;
            st.lay[op.output()] = op.out_lay();
        }
        let live = self.live_after(k);
        let per_len = |slot: usize| {
            let y1 = Shape4::new(1, st.cur[slot].c, st.cur[slot].h, st.cur[slot].w);
            match st.lay[slot] {
                Lay::Blk => blk::blk16_len(y1),
                Lay::Plain => y1.len().expect("checked"),
            }
        };
        let lens: Vec<usize> = live.iter().map(|&sl| per_len(sl)).collect();
        // Each image's part of every live slot, as disjoint mutable slices (`map` is a
        // permutation: distinct slots, distinct buffers).
        ws.map = self.map_after(k);
        let mut bufs: Vec<Option<&mut Aligned>> = ws.slots.iter_mut().map(Some).collect();
        let mut parts: Vec<Vec<&mut [f32]>> = (0..s.n).map(|_| Vec::with_capacity(live.len())).collect();
        for (j, &sl) in live.iter().enumerate() {
            let buf = bufs[ws.map[sl]].take().expect("distinct buffers");
            for (img, part) in buf.as_mut_slice()[..s.n * lens[j]].chunks_mut(lens[j]).enumerate() {
                parts[img].push(part);
            }
        }
        // SE ops after the split whose squeeze is fused into a conv before it: their
        // channel means are computed per image too (the workspace's hidden state).
        let carried: Vec<usize> = self
            .squeeze_for
            .iter()
            .enumerate()
            .filter_map(|(j, se)| se.filter(|&se| j < k && se >= k))
            .collect();
        let mut mean_parts: Vec<Vec<&mut [f32]>> = (0..s.n).map(|_| Vec::with_capacity(carried.len())).collect();
        for (i, m) in ws.means.iter_mut().enumerate() {
            if carried.contains(&i) {
                let c = m.len() / s.n;
                for (img, part) in m.chunks_mut(c).enumerate() {
                    mean_parts[img].push(part);
                }
            }
        }
        let parts: Vec<_> = parts.into_iter().zip(mean_parts).collect();
        let prof = profiling();
        // `alone`: the image runs with the whole pool (its ops split across the threads)
        // instead of on one thread.
        let run_one = |img: usize, (mut dst, mut mdst): (Vec<&mut [f32]>, Vec<&mut [f32]>), alone: bool| -> Result<Vec<(String, f64)>, String> {
            let mut w1 = self.workspace(one)?;
            w1.map = (0..self.num_slots).collect();
            let xi = &x[img * per_in..(img + 1) * per_in];
            // k ≥ 1, so op 0, the input's only reader when direct, runs in this phase.
            let input = if self.direct_input {
                Some(xi)
            } else {
                w1.slots[0].as_mut_slice()[..per_in].copy_from_slice(xi);
                None
            };
            let mut st1 = State::new(self.num_slots, one, gate);
            let mut t1 = Vec::new();
            if alone {
                // The whole pool on one image: its threads held as a team, as in the
                // batched phase.
                pool::team(|| self.exec(&mut w1, 0..k, &mut st1, &mut t1, input));
            } else {
                pool::serial(|| self.exec(&mut w1, 0..k, &mut st1, &mut t1, input));
            }
            for ((&sl, d), &len) in live.iter().zip(dst.iter_mut()).zip(&lens) {
                d.copy_from_slice(&w1.slots[w1.map[sl]].as_slice()[..len]);
            }
            for (&se, d) in carried.iter().zip(mdst.iter_mut()) {
                d.copy_from_slice(&w1.means[se]);
            }
            self.give_back(w1);
            Ok(t1)
        };
        // Whole rounds of one image per thread (a thread that runs out of images helps
        // with the ops of those still running, `pool::items`); the images left over
        // (n mod threads) then run one after another on the whole pool rather than
        // leaving threads idle (batch 3 on 2 threads: two images side by side, then one
        // on both threads).
        let threads = pool::threads_here();
        let mut parts = parts;
        let rest = parts.split_off(s.n - s.n % threads);
        let rounds = parts.len();
        type Parts<'p> = (Vec<&'p mut [f32]>, Vec<&'p mut [f32]>);
        type Times = Result<Vec<(String, f64)>, String>;
        let todo: Vec<std::sync::Mutex<Option<Parts>>> = parts.into_iter().map(|d| std::sync::Mutex::new(Some(d))).collect();
        let done: Vec<std::sync::Mutex<Option<Times>>> = (0..rounds).map(|_| std::sync::Mutex::new(None)).collect();
        pool::items(rounds, |i| {
            let d = todo[i].lock().unwrap_or_else(|e| e.into_inner()).take().expect("each image runs once");
            let r = run_one(i, d, false);
            *done[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        let mut res: Vec<Times> = done.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every image ran")).collect();
        res.extend(rest.into_iter().enumerate().map(|(j, d)| run_one(rounds + j, d, true)));
        for r in res {
            let t1 = r?;
            if prof {
                // Per op: the sum over images (thread time, not wall time).
                if times.is_empty() {
                    *times = t1;
                } else {
                    for (a, b) in times.iter_mut().zip(t1) {
                        a.1 += b.1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Slots whose value after ops `0..k` is read later: by an op at `k..` before that
    /// op's slot is overwritten, or as the program's output.
    fn live_after(&self, k: usize) -> Vec<usize> {
        let mut live = Vec::new();
        let mut written = vec![false; self.num_slots];
        for (idx, op) in self.ops.iter().enumerate().skip(k) {
            for i in self.reads(idx) {
                if !written[i] && !live.contains(&i) {
                    live.push(i);
                }
            }
            if !self.skipped[idx] {
                written[op.output()] = true;
            }
        }
        if !written[self.output] && !live.contains(&self.output) {
            live.push(self.output);
        }
        // Ascending: `per_image` pairs them with the slots in slot order.
        live.sort_unstable();
        live
    }

    fn logits(&self, ws: &Workspace, st: &State) -> Vec<f32> {
        let out = Val { buf: ws.slots[ws.map[self.output]].as_slice(), s: st.cur[self.output], lay: st.lay[self.output] };
        let n = st.cur[self.output].n;
        out.plain().as_ref()[..n * self.num_classes].to_vec()
    }

    /// Runs `ops` on `ws` (whose slot 0 holds the input), tracking shapes and layouts
    /// in `st`; with `SENET_PROFILE=1` appends each op's time to `times`. `input`: the
    /// program's input when it is read in place (`direct_input`) rather than from slot 0.
    fn exec(&self, ws: &mut Workspace, range: std::ops::Range<usize>, st: &mut State, times: &mut Vec<(String, f64)>, mut input: Option<&[f32]>) {
        let profile = profiling();
        let State { cur, lay, gate } = st;
        let gate = *gate;
        for i in range {
            let (op, ys) = (&self.ops[i], ws.shapes[i]);
            let yi = op.output();
            if self.skipped[i] {
                // Runs inside the gated SE op that follows (`gated_by`).
                cur[yi] = ys;
                lay[yi] = op.out_lay();
                if yi == 0 {
                    input = None;
                }
                continue;
            }
            // The buffer written (see `write_buffer`): no other input of the op lives
            // there (checked in `new`), so take it out and borrow the inputs from the rest.
            let target = self.write_buffer(i, &ws.map);
            let mut yb = std::mem::take(&mut ws.slots[target]);
            let t0 = profile.then(std::time::Instant::now);
            let map = &ws.map;
            let v = |i: usize| match input {
                Some(x) if i == 0 => Val { buf: x, s: cur[0], lay: Lay::Plain },
                _ => Val { buf: ws.slots[map[i]].as_slice(), s: cur[i], lay: lay[i] },
            };
            let ylay = match op {
                Op::Conv { x, conv, residual, relu, .. } => {
                    let xv = v(*x);
                    let res = residual.map(|r| v(r).blocked());
                    let y = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    let res = res.as_deref();
                    // A gated SE op that takes the unfused order (`gate_in_epilogue`)
                    // has no use for the means of this output.
                    let sq = self.squeeze_for[i].filter(|&k| self.gated_by[k].is_none() || gate_in_epilogue(gate));
                    if xv.lay == Lay::Plain && conv.takes_nchw() {
                        conv.run_nchw(xv.plain().as_ref(), xv.s, y, res, *relu);
                        if let Some(k) = sq {
                            // The NCHW stem path has no fused squeeze: a separate pass.
                            blk::squeeze_blk16(y, ys, &mut ws.means[k]);
                        }
                    } else if let Some(k) = sq {
                        conv.run_squeeze(xv.blocked().as_ref(), xv.s, y, res, *relu, &mut ws.means[k]);
                    } else {
                        conv.run(xv.blocked().as_ref(), xv.s, y, res, *relu);
                    }
                    Lay::Blk
                }
                Op::MaxPool { x, k, stride, pad, ceil, .. } => {
                    let xv = v(*x);
                    let y = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    blk::max_pool2d_blk16(xv.blocked().as_ref(), xv.s, *k, *stride, *pad, *ceil, y);
                    Lay::Blk
                }
                Op::Se { c, cr, w1, b1, w2, b2, residual, relu, .. } if self.gated_by[i].is_some() => {
                    let j = self.gated_by[i].expect("matched");
                    let conv = self.gated_conv(j);
                    let w = SeWeights::new(w1, b1.as_deref(), w2, b2.as_deref(), *c, *cr).expect("checked in new()");
                    let av = v(self.ops[j].inputs()[0]);
                    let ab = av.blocked();
                    let rb = residual.map(|r| v(r).blocked());
                    let y = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    let n = ys.n;
                    let mut g = vec![0.0f32; n * c];
                    if gate_in_epilogue(gate) {
                        // Gates from the means of the conv's input through the folded
                        // first layer, then one pass: y = act((conv(a) + b) · gate + residual).
                        // (The conv that wrote `a` summed the means, unless it could not.)
                        if !self.squeeze_fused(i) {
                            blk::squeeze_blk16(ab.as_ref(), av.s, &mut ws.means[i]);
                        }
                        let f = self.folds[i].as_ref().expect("every gated SE op has a fold");
                        se::excite_k(&ws.means[i], n, f.cin, &f.w1, Some(&f.b1), &w, &mut g);
                        let cp = blk::blocks(*c) * blk::BLK;
                        let mut gp = vec![0.0f32; n * cp];
                        for (d, s) in gp.chunks_exact_mut(cp).zip(g.chunks_exact(*c)) {
                            d[..*c].copy_from_slice(s);
                        }
                        conv.run_gated(ab.as_ref(), av.s, y, rb.as_deref(), *relu, &gp);
                    } else {
                        // The unfused order: conv (with its own squeeze), gates, scale
                        // in place.
                        let mut m = vec![0.0f32; n * c];
                        conv.run_squeeze(ab.as_ref(), av.s, y, None, false, &mut m);
                        se::excite(&m, n, &w, &mut g);
                        blk::se_scale_blk16(ScaleIo::InPlace { xy: y, residual: rb.as_deref() }, ys, &g, *relu);
                    }
                    Lay::Blk
                }
                Op::Se { x, c, cr, w1, b1, w2, b2, residual, relu, .. } if self.in_place[i] => {
                    let w = SeWeights::new(w1, b1.as_deref(), w2, b2.as_deref(), *c, *cr).expect("checked in new()");
                    let rb = residual.map(|r| v(r).blocked());
                    let xy = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    let io = ScaleIo::InPlace { xy, residual: rb.as_deref() };
                    if self.squeeze_fused(i) {
                        let mut g = vec![0.0f32; ys.n * c];
                        se::excite(&ws.means[i], ys.n, &w, &mut g);
                        blk::se_scale_blk16(io, ys, &g, *relu);
                    } else {
                        blk::se_block_blk16(io, ys, &w, *relu);
                    }
                    Lay::Blk
                }
                Op::Se { x, c, cr, w1, b1, w2, b2, residual, relu, .. } => {
                    let w = SeWeights::new(w1, b1.as_deref(), w2, b2.as_deref(), *c, *cr).expect("checked in new()");
                    let xv = v(*x);
                    let xb = xv.blocked();
                    let rb = residual.map(|r| v(r).blocked());
                    let y = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    let io = ScaleIo::Out { x: xb.as_ref(), residual: rb.as_deref(), out: y };
                    if self.squeeze_fused(i) {
                        // Means computed by the conv that wrote x: excite, then one pass.
                        let mut g = vec![0.0f32; xv.s.n * c];
                        se::excite(&ws.means[i], xv.s.n, &w, &mut g);
                        blk::se_scale_blk16(io, xv.s, &g, *relu);
                    } else {
                        blk::se_block_blk16(io, xv.s, &w, *relu);
                    }
                    Lay::Blk
                }
                Op::Add { a, b, relu, .. } => {
                    let (av, bv) = (v(*a), v(*b));
                    let y = &mut yb.as_mut_slice()[..blk::blk16_len(ys)];
                    blk::add_relu_blk16(av.blocked().as_ref(), bv.blocked().as_ref(), y, *relu);
                    Lay::Blk
                }
                Op::Gap { x, .. } => {
                    let xv = v(*x);
                    let y = &mut yb.as_mut_slice()[..ys.n * ys.c];
                    match xv.lay {
                        Lay::Blk => blk::global_avg_pool_blk16(xv.raw(), xv.s, y),
                        Lay::Plain => nn::global_avg_pool(xv.raw(), xv.s, y),
                    }
                    Lay::Plain
                }
                Op::Linear { x, cin, cout, weight, bias, .. } => {
                    let xv = v(*x);
                    let y = &mut yb.as_mut_slice()[..ys.n * ys.c];
                    nn::linear(xv.plain().as_ref(), xv.s.n, *cin, weight, bias, *cout, y);
                    Lay::Plain
                }
            };
            debug_assert_eq!(ylay, op.out_lay());
            if let Some(t0) = t0 {
                times.push((op.describe(cur, ys), t0.elapsed().as_secs_f64() * 1e3));
            }
            ws.slots[target] = yb;
            self.advance_map(i, &mut ws.map);
            cur[yi] = ys;
            lay[yi] = ylay;
            if yi == 0 {
                // Slot 0 now holds an op's output (in its buffer), not the input.
                input = None;
            }
        }
    }
}

/// Whether a gated SE op (`Model::gated_by`) applies its gates in the conv's epilogue
/// (always, unless `forced` says otherwise: [`se_gate_override`] or
/// [`Model::forward_gate`]); otherwise it runs conv, squeeze, excitation and an in-place
/// scale pass in that order. History: while gating paid a projection of the input
/// means through the conv's weights (cin·cout floats read, cold at batch 1), it was
/// chosen only where the map has at least half as many pixels as the conv has input
/// channels (56×56 to 14×14 in seresnet50; per stage, batch 1, 1 thread, gated vs not:
/// 56×56 −0.83 ms, 28×28 −0.23, 14×14 +0.14 then −0.2 once each thread kept its own
/// range, 7×7 +1.05). With the first FC layer folded into the conv ([`SeFold`]) that
/// read is gone: the folded gated order took 0.97–0.99 of the forward's time at batch 1
/// on 2 threads at 7×7 too (0.99–1.00 on 1 thread; batch 8 0.98 / 1.00), and the
/// fold alone saved 0.15–0.4 ms on the six 14×14 blocks. An image's result never
/// depends on the batch it is in.
fn gate_in_epilogue(forced: Option<bool>) -> bool {
    forced.unwrap_or(true)
}

/// `SENET_SE_GATE=0|1` forces every gated SE op to the unfused / gated order
/// (measurements; read at the start of each forward, so that interleaved A/B runs can
/// switch it between calls, and every op of one forward sees the same value).
fn se_gate_override() -> Option<bool> {
    match std::env::var("SENET_SE_GATE").as_deref() {
        Ok("0") => Some(false),
        Ok("1") => Some(true),
        _ => None,
    }
}

/// Which leading ops of a batched forward run image by image (see [`Model::forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// None: every op on the whole batch.
    Batch,
    /// Every op image by image.
    Images,
    /// The first k ops.
    Ops(usize),
    /// The ops before the first one whose output has fewer than this many pixels.
    Pixels(usize),
}

impl Split {
    /// The default: ops up to the last stage of an SE-ResNet at 224×224 (outputs of at
    /// least 8×8 pixels) run per image; by then an image's activations are small, and
    /// batching the last stage reads its weights (three quarters of an SE-ResNet-50's)
    /// once per batch instead of once per image.
    pub const DEFAULT: Split = Split::Pixels(64);

    /// [`Split::DEFAULT`], or `SENET_SPLIT` (a development aid for benchmarks: `batch`,
    /// `images`, `ops=K` or `pixels=P`).
    pub fn from_env() -> Split {
        let Ok(v) = std::env::var("SENET_SPLIT") else { return Split::DEFAULT };
        let v = v.trim();
        let num = |p: &str| v.strip_prefix(p).and_then(|n| n.parse::<usize>().ok());
        match v {
            "batch" => Split::Batch,
            "images" => Split::Images,
            _ => num("ops=").map(Split::Ops).or_else(|| num("pixels=").map(Split::Pixels)).unwrap_or(Split::DEFAULT),
        }
    }
}

/// Shape and memory order of every slot's current value during a run.
struct State {
    cur: Vec<Shape4>,
    lay: Vec<Lay>,
    /// [`se_gate_override`] of this forward.
    gate: Option<bool>,
}

impl State {
    /// Before the first op: slot 0 holds the NCHW input.
    fn new(num_slots: usize, input: Shape4, gate: Option<bool>) -> State {
        let mut cur = vec![Shape4::new(0, 0, 0, 0); num_slots];
        cur[0] = input;
        State { cur, lay: vec![Lay::Plain; num_slots], gate }
    }
}
