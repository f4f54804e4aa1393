//! The model executor: a batched forward gives, bit for bit, what forwarding each image
//! alone gives, whichever ops run image by image (`Split`) and at every thread count;
//! and it matches a float64 reference of the same small SE-ResNet-like program.

mod common;

use common::{same_for_thread_counts, Rng};
use senet_kernels::graph::{Model, Op, Split};
use senet_kernels::nn::Conv;
use senet_kernels::{pool, Shape4};

/// Weights of one convolution: PyTorch layout, scaled to keep activations O(1).
struct ConvW {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

fn conv_w(rng: &mut Rng, cin: usize, cout: usize, k: usize, stride: usize, pad: usize) -> ConvW {
    let scale = (1.0 / (cin * k * k) as f32).sqrt() * 1.5;
    let w = rng.vec(cout * cin * k * k).iter().map(|v| v * scale).collect();
    let b = rng.vec(cout).iter().map(|v| v * 0.1).collect();
    ConvW { w, b, cin, cout, k, stride, pad }
}

/// A stem, a max pool, two SE bottlenecks (the second downsampling, with a projection
/// shortcut), global pooling and a linear head: every op kind, slots reused.
/// SE weights: w1, b1, w2, b2.
type SeW = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

struct Net {
    convs: Vec<ConvW>,
    se: Vec<SeW>,
    lin: (Vec<f32>, Vec<f32>),
}

const C0: usize = 16;
const WIDTHS: [(usize, usize, usize); 2] = [(16, 32, 1), (24, 80, 2)];
const CLASSES: usize = 10;

fn net() -> Net {
    let mut rng = Rng(0x5eed_1234);
    let mut convs = vec![conv_w(&mut rng, 3, C0, 3, 2, 1)];
    let mut se = Vec::new();
    let mut cin = C0;
    for (mid, out, stride) in WIDTHS {
        convs.push(conv_w(&mut rng, cin, mid, 1, 1, 0));
        convs.push(conv_w(&mut rng, mid, mid, 3, stride, 1));
        convs.push(conv_w(&mut rng, mid, out, 1, 1, 0));
        convs.push(conv_w(&mut rng, cin, out, 1, stride, 0));
        let cr = out / 4;
        se.push((rng.vec(cr * out), rng.vec(cr), rng.vec(out * cr), rng.vec(out)));
        cin = out;
    }
    let lin = (rng.vec(CLASSES * cin), rng.vec(CLASSES));
    Net { convs, se, lin }
}

fn model(n: &Net) -> Model {
    let conv = |i: usize| {
        let c = &n.convs[i];
        Conv::new(&c.w, &c.b, c.cin, c.cout, c.k, c.k, c.stride, c.pad, 1)
    };
    // Slots: 0 input, 1 block input/output, 2/3 temporaries, 4 shortcut, 5 pooled, 6 logits.
    let mut ops = vec![
        Op::Conv { x: 0, y: 2, conv: conv(0), residual: None, relu: true },
        Op::MaxPool { x: 2, y: 1, k: 3, stride: 2, pad: 1, ceil: false },
    ];
    for (b, (mid, out, _)) in WIDTHS.into_iter().enumerate() {
        let _ = mid;
        let (w1, b1, w2, b2) = n.se[b].clone();
        ops.push(Op::Conv { x: 1, y: 2, conv: conv(1 + 4 * b), residual: None, relu: true });
        ops.push(Op::Conv { x: 2, y: 3, conv: conv(2 + 4 * b), residual: None, relu: true });
        ops.push(Op::Conv { x: 3, y: 2, conv: conv(3 + 4 * b), residual: None, relu: false });
        ops.push(Op::Conv { x: 1, y: 4, conv: conv(4 + 4 * b), residual: None, relu: false });
        ops.push(Op::Se { x: 2, y: 1, c: out, cr: out / 4, w1, b1: Some(b1), w2, b2: Some(b2), residual: Some(4), relu: true });
    }
    ops.push(Op::Gap { x: 1, y: 5 });
    ops.push(Op::Linear { x: 5, y: 6, cin: WIDTHS[1].1, cout: CLASSES, weight: n.lin.0.clone(), bias: n.lin.1.clone() });
    Model::new(ops, 7, 3, CLASSES, 6).unwrap()
}

// ---- float64 reference (NCHW, one image) ----

fn conv_ref(x: &[f64], c: usize, h: usize, w: usize, cw: &ConvW) -> (Vec<f64>, usize, usize) {
    let oh = (h + 2 * cw.pad - cw.k) / cw.stride + 1;
    let ow = (w + 2 * cw.pad - cw.k) / cw.stride + 1;
    let mut y = vec![0.0f64; cw.cout * oh * ow];
    for co in 0..cw.cout {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = cw.b[co] as f64;
                for ci in 0..c {
                    for ky in 0..cw.k {
                        for kx in 0..cw.k {
                            let iy = (oy * cw.stride + ky) as isize - cw.pad as isize;
                            let ix = (ox * cw.stride + kx) as isize - cw.pad as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let wv = cw.w[((co * c + ci) * cw.k + ky) * cw.k + kx] as f64;
                            acc += wv * x[(ci * h + iy as usize) * w + ix as usize];
                        }
                    }
                }
                y[(co * oh + oy) * ow + ox] = acc;
            }
        }
    }
    (y, oh, ow)
}

fn relu(v: &mut [f64]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

fn reference(n: &Net, x: &[f32], h: usize, w: usize) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (mut a, mut h, mut w) = conv_ref(&x, 3, h, w, &n.convs[0]);
    relu(&mut a);
    // max pool 3/2 pad 1 (floor)
    let (ph, pw) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
    let mut p = vec![f64::NEG_INFINITY; C0 * ph * pw];
    for c in 0..C0 {
        for oy in 0..ph {
            for ox in 0..pw {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = a[(c * h + iy as usize) * w + ix as usize];
                            let o = &mut p[(c * ph + oy) * pw + ox];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
    }
    let (mut x, mut c) = (p, C0);
    (h, w) = (ph, pw);
    for (b, (_, out, _)) in WIDTHS.into_iter().enumerate() {
        let (mut t, h1, w1) = conv_ref(&x, c, h, w, &n.convs[1 + 4 * b]);
        relu(&mut t);
        let (mut t2, h2, w2) = conv_ref(&t, n.convs[1 + 4 * b].cout, h1, w1, &n.convs[2 + 4 * b]);
        relu(&mut t2);
        let (t3, _, _) = conv_ref(&t2, n.convs[2 + 4 * b].cout, h2, w2, &n.convs[3 + 4 * b]);
        let (sc, _, _) = conv_ref(&x, c, h, w, &n.convs[4 + 4 * b]);
        let hw = h2 * w2;
        let (w1s, b1s, w2s, b2s) = &n.se[b];
        let cr = out / 4;
        let z: Vec<f64> = (0..out).map(|ch| t3[ch * hw..(ch + 1) * hw].iter().sum::<f64>() / hw as f64).collect();
        let hid: Vec<f64> = (0..cr)
            .map(|j| (b1s[j] as f64 + (0..out).map(|ch| w1s[j * out + ch] as f64 * z[ch]).sum::<f64>()).max(0.0))
            .collect();
        let g: Vec<f64> = (0..out)
            .map(|ch| {
                let s = b2s[ch] as f64 + (0..cr).map(|j| w2s[ch * cr + j] as f64 * hid[j]).sum::<f64>();
                1.0 / (1.0 + (-s).exp())
            })
            .collect();
        x = (0..out * hw).map(|i| (t3[i] * g[i / hw] + sc[i]).max(0.0)).collect();
        (c, h, w) = (out, h2, w2);
    }
    let pooled: Vec<f64> = (0..c).map(|ch| x[ch * h * w..(ch + 1) * h * w].iter().sum::<f64>() / (h * w) as f64).collect();
    (0..CLASSES)
        .map(|k| n.lin.1[k] as f64 + (0..c).map(|ch| n.lin.0[k * c + ch] as f64 * pooled[ch]).sum::<f64>())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batched_forward_equals_per_image_forward_for_every_split() {
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let n = net();
    let m = model(&n);
    // Both SE ops overwrite their (dead) input, and run fused with their conv3; the stem
    // reads the caller's input array itself.
    assert_eq!(m.in_place_count(), 2);
    assert_eq!(m.gated_count(), 2);
    assert!(m.reads_input_in_place());
    // Both SE blocks gate in the conv's epilogue (the default, `None`), or both take the
    // unfused order (conv, squeeze, excitation, scale: `Some(false)`).
    for (h, w) in [(37, 45), (18, 17)] {
        for gate in [None, Some(false)] {
            batched_equals_per_image(&m, h, w, gate);
        }
    }
}

fn batched_equals_per_image(m: &Model, h: usize, w: usize, gate: Option<bool>) {
    let batch = 5;
    let per = 3 * h * w;
    let x = Rng(99).vec(batch * per);
    let s = Shape4::new(batch, 3, h, w);
    // Each image alone (batch 1 never splits).
    let alone: Vec<f32> = (0..batch)
        .flat_map(|i| m.forward_gate(&x[i * per..(i + 1) * per], Shape4::new(1, 3, h, w), Split::DEFAULT, gate).unwrap())
        .collect();
    let nops = 14;
    let mut splits = vec![Split::Batch, Split::Images, Split::DEFAULT, Split::Pixels(100), Split::Pixels(1 << 20)];
    splits.extend((0..=nops + 1).map(Split::Ops));
    let mut failed = Vec::new();
    for split in splits {
        let y = same_for_thread_counts(|| m.forward_gate(&x, s, split, gate).unwrap());
        if bits(&y) != bits(&alone) {
            let d = y.iter().zip(&alone).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            failed.push(format!("{split:?} (max |Δ| {d:e})"));
        }
    }
    assert!(failed.is_empty(), "{h}×{w} gate {gate:?}: batched logits differ from per-image ones for splits {failed:?}");
}

/// A batch-1 forward on a 2-thread pool runs its parallel ops on a team (`pool::team`:
/// the other thread spinning between ops), although the pool's threads are bound to
/// CPUs by then (a bound thread sees one CPU: the CPU count must be read before), unless
/// the process may use fewer than 2 CPUs or `SENET_TEAM=0`. Same logits with and
/// without the team is covered by the thread-count tests (1 thread never has one).
#[test]
fn batch1_forward_runs_its_ops_on_a_team() {
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 || std::env::var("SENET_TEAM").is_ok_and(|v| v.trim() == "0") {
        return;
    }
    let m = model(&net());
    let (h, w) = (96, 96);
    let x = Rng(3).vec(3 * h * w);
    let prev = pool::num_threads();
    pool::set_num_threads(2).unwrap();
    let y1 = m.forward(&x, Shape4::new(1, 3, h, w)).unwrap();
    let before = pool::team_jobs();
    let y2 = m.forward(&x, Shape4::new(1, 3, h, w)).unwrap();
    let jobs = pool::team_jobs() - before;
    pool::set_num_threads(1).unwrap();
    let before1 = pool::team_jobs();
    let y3 = m.forward(&x, Shape4::new(1, 3, h, w)).unwrap();
    let jobs1 = pool::team_jobs() - before1;
    pool::set_num_threads(prev).unwrap();
    assert!(jobs >= 5, "{jobs} ops ran on a team in a batch-1 forward on 2 threads");
    assert_eq!(jobs1, 0, "a 1-thread pool makes no team");
    assert_eq!(bits(&y1), bits(&y2));
    assert_eq!(bits(&y1), bits(&y3));
}

/// A batch's per-image phase on 2 threads runs each image's parallel ops as jobs that
/// the thread with no image left can join (`pool::items`), with the same logits, bit
/// for bit, as the images run alone on 1 thread.
#[test]
fn per_image_phase_offers_its_ops_to_idle_threads() {
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 || ["SENET_TEAM", "SENET_HELP"].iter().any(|k| std::env::var(k).is_ok_and(|v| v.trim() == "0")) {
        return;
    }
    let m = model(&net());
    let (h, w) = (96, 96);
    let per = 3 * h * w;
    let x = Rng(5).vec(4 * per);
    let prev = pool::num_threads();
    pool::set_num_threads(1).unwrap();
    let alone: Vec<Vec<f32>> = (0..4).map(|i| m.forward(&x[i * per..(i + 1) * per], Shape4::new(1, 3, h, w)).unwrap()).collect();
    pool::set_num_threads(2).unwrap();
    let before = pool::team_jobs();
    let y = m.forward_split(&x, Shape4::new(4, 3, h, w), Split::Images).unwrap();
    let jobs = pool::team_jobs() - before;
    pool::set_num_threads(prev).unwrap();
    assert!(jobs >= 4 * 5, "{jobs} ops offered in the per-image phase of 4 images");
    assert_eq!(bits(&y), bits(&alone.concat()));
}

/// Batch forwards from several threads at once on a 2-thread pool (two models, so
/// nothing queues them): all finish (a per-image phase never waits for a worker queued
/// behind another call's) with the logits of a lone forward, bit for bit.
#[test]
fn concurrent_batch_forwards_finish() {
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let models = [model(&net()), model(&net())];
    let (h, w) = (96, 96);
    let x = Rng(9).vec(3 * 3 * h * w);
    let prev = pool::num_threads();
    pool::set_num_threads(2).unwrap();
    let want = models[0].forward(&x, Shape4::new(3, 3, h, w)).unwrap();
    std::thread::scope(|s| {
        for c in 0..4 {
            let (m, x, want) = (&models[c % 2], &x, &want);
            s.spawn(move || {
                for _ in 0..20 {
                    let y = m.forward(x, Shape4::new(3, 3, h, w)).unwrap();
                    assert_eq!(bits(&y), bits(want));
                }
            });
        }
    });
    pool::set_num_threads(prev).unwrap();
}

#[test]
fn forward_matches_float64_reference() {
    // (for_each_level holds the test lock itself)
    let n = net();
    let m = model(&n);
    // Both SE blocks gated in conv3's epilogue with the folded first layer (`None`, the
    // default), and both unfused (`Some(false)`).
    for ((h, w), gate) in [((40, 33), None), ((18, 17), None), ((40, 33), Some(false)), ((18, 17), Some(false))] {
        let per = 3 * h * w;
        let x = Rng(7).vec(3 * per);
        senet_kernels::simd::for_each_level(|level| {
            let y = m.forward_gate(&x, Shape4::new(3, 3, h, w), Split::Ops(6), gate).unwrap();
            for i in 0..3 {
                let r = reference(&n, &x[i * per..(i + 1) * per], h, w);
                for k in 0..CLASSES {
                    let (got, want) = (y[i * CLASSES + k] as f64, r[k]);
                    // float32 accumulation over ≤ 432 products per output through 9
                    // layers: relative 1e-4 of the logit scale is ~100× the observed error.
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{h}×{w} gate {gate:?} {level:?} image {i} logit {k}: {got} vs {want}");
                }
            }
        });
    }
}

#[test]
fn batch_errors_leave_no_state_behind() {
    // Its forwards run on the process-wide pool, whose size other tests change and whose
    // team counter `batch1_forward_runs_its_ops_on_a_team` reads: serialized with them.
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let n = net();
    let m = model(&n);
    // Wrong channel count, wrong length: errors, not panics.
    let x = vec![0.5f32; 2 * 4 * 8 * 8];
    assert!(m.forward_split(&x, Shape4::new(2, 4, 8, 8), Split::Images).is_err());
    assert!(m.forward_split(&x[1..], Shape4::new(2, 4, 8, 8), Split::Images).is_err());
    let x = vec![0.5f32; 2 * 3 * 32 * 32];
    let a = m.forward_split(&x, Shape4::new(2, 3, 32, 32), Split::Images).unwrap();
    let b = m.forward_split(&x, Shape4::new(2, 3, 32, 32), Split::Batch).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_eq!(a[..CLASSES], a[CLASSES..]);
}

/// Which SE ops scale in place and which run fused with their conv: a slot that later
/// holds the program's output may still be scaled in place when an op overwrites it
/// first; the pairing is refused when an op between the conv and the SE op overwrites
/// the conv's input, reads its output, or when the conv is not a dense 1×1/1 layer
/// without residual and ReLU.
#[test]
fn in_place_and_gating_rules() {
    let n = net();
    let conv = |i: usize| {
        let c = &n.convs[i];
        Conv::new(&c.w, &c.b, c.cin, c.cout, c.k, c.k, c.stride, c.pad, 1)
    };
    let se = |x: usize, y: usize, residual: Option<usize>| {
        let (w1, b1, w2, b2) = n.se[0].clone();
        Op::Se { x, y, c: 32, cr: 8, w1, b1: Some(b1), w2, b2: Some(b2), residual, relu: true }
    };
    let head = |x: usize, pooled: usize, out: usize| {
        vec![
            Op::Gap { x, y: pooled },
            Op::Linear { x: pooled, y: out, cin: 32, cout: CLASSES, weight: vec![0.01; CLASSES * 32], bias: vec![0.0; CLASSES] },
        ]
    };
    // Stem (16 ch) → conv3-like 1×1 16→32 → SE (x = 3, the output slot: overwritten by
    // the linear head later, so in place and gated).
    let stem = || Op::Conv { x: 0, y: 1, conv: conv(0), residual: None, relu: true };
    let proj = |y: usize, relu: bool| Op::Conv { x: 1, y, conv: conv(3), residual: None, relu };
    let mut ops = vec![stem(), proj(3, false), se(3, 2, None)];
    ops.extend(head(2, 4, 3));
    let m = Model::new(ops, 5, 3, CLASSES, 3).unwrap();
    assert_eq!((m.in_place_count(), m.gated_count()), (1, 1));
    // The same with a ReLU on the conv: in place, not gated.
    let mut ops = vec![stem(), proj(3, true), se(3, 2, None)];
    ops.extend(head(2, 4, 3));
    let m = Model::new(ops, 5, 3, CLASSES, 3).unwrap();
    assert_eq!((m.in_place_count(), m.gated_count()), (1, 0));
    // An op between conv and SE overwrites the conv's input (slot 1): not gated.
    let mut ops = vec![stem(), proj(3, false), Op::MaxPool { x: 0, y: 1, k: 1, stride: 1, pad: 0, ceil: false }, se(3, 2, None)];
    ops.extend(head(2, 4, 3));
    let m = Model::new(ops, 5, 3, CLASSES, 3).unwrap();
    assert_eq!((m.in_place_count(), m.gated_count()), (1, 0));
    // The SE input is read again later (as the next op's input): neither.
    let mut ops = vec![stem(), proj(3, false), se(3, 2, None), Op::Add { a: 2, b: 3, y: 1, relu: false }];
    ops.extend(head(1, 4, 5));
    let m = Model::new(ops, 6, 3, CLASSES, 5).unwrap();
    assert_eq!((m.in_place_count(), m.gated_count()), (0, 0));
    // The SE input is the program's output and never overwritten: not in place (and the
    // program is rejected anyway: its output is not numClasses wide).
    let ops = vec![stem(), proj(3, false), se(3, 2, None)];
    let m = Model::new(ops, 4, 3, 32, 3).unwrap();
    assert_eq!((m.in_place_count(), m.gated_count()), (0, 0));
}

/// A program that reads its input twice (two convolutions of it, summed) takes the
/// input copy instead of reading the caller's array in place, and so does one whose
/// stem takes the input as its residual; a program whose input slot is reused for a
/// later activation reads it in place. Each computes the same at every split and
/// thread count, and the two-reader program is the sum of its two branches (every op
/// after the convs is linear).
#[test]
fn input_read_in_place_only_by_its_one_reader() {
    let _g = senet_kernels::simd::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng(0xface);
    let (a, b) = (conv_w(&mut rng, 3, 16, 3, 2, 1), conv_w(&mut rng, 3, 16, 3, 2, 1));
    let conv = |c: &ConvW| Conv::new(&c.w, &c.b, c.cin, c.cout, c.k, c.k, c.stride, c.pad, 1);
    let lin = (rng.vec(CLASSES * 16), rng.vec(CLASSES));
    let head = |x: usize| {
        vec![
            Op::Gap { x, y: 4 },
            Op::Linear { x: 4, y: 5, cin: 16, cout: CLASSES, weight: lin.0.clone(), bias: lin.1.clone() },
        ]
    };
    let mut ops = vec![
        Op::Conv { x: 0, y: 1, conv: conv(&a), residual: None, relu: false },
        Op::Conv { x: 0, y: 2, conv: conv(&b), residual: None, relu: false },
        Op::Add { a: 1, b: 2, y: 3, relu: false },
    ];
    ops.extend(head(3));
    let both = Model::new(ops, 6, 3, CLASSES, 5).unwrap();
    assert!(!both.reads_input_in_place());
    let one = |c: &ConvW| {
        // The stem's output goes to slot 0 (the input's, dead by then) and is read from
        // there: the in-place input must not shadow it.
        let mut ops = vec![
            Op::Conv { x: 0, y: 1, conv: conv(c), residual: None, relu: false },
            Op::MaxPool { x: 1, y: 0, k: 1, stride: 1, pad: 0, ceil: false },
        ];
        ops.extend(head(0));
        Model::new(ops, 6, 3, CLASSES, 5).unwrap()
    };
    let (ma, mb) = (one(&a), one(&b));
    assert!(ma.reads_input_in_place());
    let (h, w, batch) = (21, 18, 3);
    let x = Rng(5).vec(batch * 3 * h * w);
    let s = Shape4::new(batch, 3, h, w);
    let splits = [Split::Batch, Split::Images, Split::Ops(1), Split::Ops(2), Split::Ops(3)];
    for m in [&both, &ma] {
        let y0 = m.forward_split(&x, s, Split::Batch).unwrap();
        for split in splits {
            let y = same_for_thread_counts(|| m.forward_split(&x, s, split).unwrap());
            assert_eq!(bits(&y), bits(&y0), "{split:?}");
        }
    }
    let (ya, yb, ysum) = (ma.forward(&x, s).unwrap(), mb.forward(&x, s).unwrap(), both.forward(&x, s).unwrap());
    for i in 0..batch * CLASSES {
        // Linear head: sum − (a + b − bias) is rounding only (float32, 16 channels).
        let want = ya[i] + yb[i] - lin.1[i % CLASSES];
        assert!((ysum[i] - want).abs() <= 1e-4 * (1.0 + want.abs()), "logit {i}: {} vs {want}", ysum[i]);
    }
    // The stem with the input as its residual too (same shape: a 1×1/1 3→3 conv).
    let c = conv_w(&mut rng, 3, 3, 1, 1, 0);
    let ops = vec![
        Op::Conv { x: 0, y: 1, conv: conv(&c), residual: Some(0), relu: false },
        Op::Gap { x: 1, y: 2 },
        Op::Linear { x: 2, y: 3, cin: 3, cout: CLASSES, weight: vec![0.1; 3 * CLASSES], bias: vec![0.0; CLASSES] },
    ];
    let res = Model::new(ops, 4, 3, CLASSES, 3).unwrap();
    assert!(!res.reads_input_in_place());
    let y = res.forward(&x, s).unwrap();
    for n in 0..batch {
        // gap(x + conv(x)) through a linear head of 0.1s: recompute from the per-channel means.
        let img = &x[n * 3 * h * w..(n + 1) * 3 * h * w];
        let mean = |ch: usize| img[ch * h * w..(ch + 1) * h * w].iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
        let mut want = 0.0;
        for co in 0..3 {
            let conv_mean: f64 = c.b[co] as f64 + (0..3).map(|ci| c.w[co * 3 + ci] as f64 * mean(ci)).sum::<f64>();
            want += 0.1 * (mean(co) + conv_mean);
        }
        for k in 0..CLASSES {
            let got = y[n * CLASSES + k] as f64;
            assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "residual image {n} logit {k}: {got} vs {want}");
        }
    }
}
