//! `NativeModel`: a compiled forward pass (see `crates/senet-kernels/src/graph.rs`),
//! built from the TypeScript layer's program (`lib/model/program.ts`).

use crate::args::{self, invalid};
use napi::bindgen_prelude::*;
use napi::{Env, JsDeferred};
use napi_derive::napi;
use senet_kernels::graph::{Model, Op};
use senet_kernels::nn::Conv;
use senet_kernels::{pool, Shape4};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One op of a program, as the TypeScript layer builds it (fields by op kind).
#[napi(object)]
pub struct OpSpec {
    pub op: String,
    pub x: Option<u32>,
    pub y: u32,
    pub a: Option<u32>,
    pub b: Option<u32>,
    pub residual: Option<u32>,
    pub relu: Option<bool>,
    pub cin: Option<u32>,
    pub cout: Option<u32>,
    pub kh: Option<u32>,
    pub kw: Option<u32>,
    pub stride: Option<u32>,
    pub pad: Option<u32>,
    pub groups: Option<u32>,
    pub k: Option<u32>,
    pub ceil: Option<bool>,
    pub c: Option<u32>,
    pub cr: Option<u32>,
    pub weight: Option<Float32Array>,
    pub bias: Option<Float32Array>,
    pub w1: Option<Float32Array>,
    pub b1: Option<Float32Array>,
    pub w2: Option<Float32Array>,
    pub b2: Option<Float32Array>,
}

fn need<T>(v: Option<T>, i: usize, op: &str, field: &str) -> Result<T> {
    v.ok_or_else(|| invalid(format!("program op {i} ({op}): missing '{field}'")))
}

fn convert(i: usize, s: OpSpec) -> Result<Op> {
    let op = s.op.as_str();
    let u = |v: Option<u32>, f: &str| need(v, i, op, f).map(|v| v as usize);
    Ok(match op {
        "conv" => {
            let (cin, cout, kh, kw) = (u(s.cin, "cin")?, u(s.cout, "cout")?, u(s.kh, "kh")?, u(s.kw, "kw")?);
            let (stride, pad, groups) = (u(s.stride, "stride")?, u(s.pad, "pad")?, u(s.groups, "groups")?);
            let weight = need(s.weight, i, op, "weight")?;
            let bias = need(s.bias, i, op, "bias")?;
            if cin == 0 || cout == 0 || kh == 0 || kw == 0 || stride == 0 || groups == 0 || cin % groups != 0 || cout % groups != 0 {
                return Err(invalid(format!(
                    "program op {i} (conv): inconsistent cin={cin} cout={cout} k={kh}×{kw} stride={stride} groups={groups}"
                )));
            }
            args::check_len(&format!("op {i} (conv) weight"), weight.len(), cout * (cin / groups) * kh * kw)?;
            args::check_len(&format!("op {i} (conv) bias"), bias.len(), cout)?;
            Op::Conv {
                x: u(s.x, "x")?,
                y: s.y as usize,
                conv: Conv::new(&weight, &bias, cin, cout, kh, kw, stride, pad, groups),
                residual: s.residual.map(|r| r as usize),
                relu: s.relu.unwrap_or(false),
            }
        }
        "maxpool" => Op::MaxPool {
            x: u(s.x, "x")?,
            y: s.y as usize,
            k: u(s.k, "k")?,
            stride: u(s.stride, "stride")?,
            pad: u(s.pad, "pad")?,
            ceil: s.ceil.unwrap_or(false),
        },
        "se" => Op::Se {
            x: u(s.x, "x")?,
            y: s.y as usize,
            c: u(s.c, "c")?,
            cr: u(s.cr, "cr")?,
            w1: need(s.w1, i, op, "w1")?.to_vec(),
            b1: s.b1.map(|b| b.to_vec()),
            w2: need(s.w2, i, op, "w2")?.to_vec(),
            b2: s.b2.map(|b| b.to_vec()),
            residual: s.residual.map(|r| r as usize),
            relu: s.relu.unwrap_or(false),
        },
        "add" => Op::Add { a: u(s.a, "a")?, b: u(s.b, "b")?, y: s.y as usize, relu: s.relu.unwrap_or(false) },
        "gap" => Op::Gap { x: u(s.x, "x")?, y: s.y as usize },
        "linear" => Op::Linear {
            x: u(s.x, "x")?,
            y: s.y as usize,
            cin: u(s.cin, "cin")?,
            cout: u(s.cout, "cout")?,
            weight: need(s.weight, i, op, "weight")?.to_vec(),
            bias: need(s.bias, i, op, "bias")?.to_vec(),
        },
        other => return Err(invalid(format!("program op {i}: unknown op '{other}'"))),
    })
}

type Deferred = JsDeferred<Float32Array, Box<dyn FnOnce(Env) -> Result<Float32Array> + Send>>;

struct Request {
    x: Vec<f32>,
    shape: Shape4,
    deferred: Deferred,
}

/// A model and its queue of asynchronous requests. Requests run one after another, each
/// with the whole pool: a burst of concurrent calls then neither oversubscribes the pool
/// nor holds a libuv thread while waiting, and its activation memory is that of one
/// batch at a time. Queued requests of the head's image size run together as one batch
/// of up to [`coalesce_limit`] images: a batch runs faster per image than single images
/// (seresnet50, 2 threads: 18.4 vs 17.0 images/s), and an image's logits are bit for
/// bit the same alone or in any batch, so each caller gets exactly its own results.
struct Shared {
    model: Model,
    queue: Mutex<(VecDeque<Request>, bool)>, // (pending, a runner is active)
}

/// Images per coalesced batch: `SENET_COALESCE` (1 turns coalescing off), else 8.
fn coalesce_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("SENET_COALESCE").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n >= 1).unwrap_or(8)
    })
}

impl Shared {
    /// The head request and the queued ones of its channels and size, in queue order,
    /// while the images add up to at most `limit` (the head alone may exceed it).
    fn next_group(q: &mut VecDeque<Request>, limit: usize) -> Vec<Request> {
        let Some(head) = q.pop_front() else { return Vec::new() };
        let (c, h, w) = (head.shape.c, head.shape.h, head.shape.w);
        let mut images = head.shape.n;
        let mut group = vec![head];
        let mut i = 0;
        while i < q.len() {
            let s = q[i].shape;
            if (s.c, s.h, s.w) == (c, h, w) && images + s.n <= limit {
                images += s.n;
                group.extend(q.remove(i));
            } else {
                i += 1;
            }
        }
        group
    }

    fn drain(self: Arc<Self>) {
        loop {
            let group = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let g = Self::next_group(&mut q.0, coalesce_limit());
                if g.is_empty() {
                    q.1 = false;
                    return;
                }
                g
            };
            let images: usize = group.iter().map(|r| r.shape.n).sum();
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let [one] = group.as_slice() {
                    return self.model.forward(&one.x, one.shape);
                }
                let mut x = Vec::with_capacity(group.iter().map(|r| r.x.len()).sum());
                for r in &group {
                    x.extend_from_slice(&r.x);
                }
                self.model.forward(&x, Shape4 { n: images, ..group[0].shape })
            }));
            match res {
                Ok(Ok(y)) if group.len() == 1 => {
                    let r = group.into_iter().next().expect("one request");
                    r.deferred.resolve(Box::new(move |_| Ok(Float32Array::new(y))));
                }
                Ok(Ok(y)) => {
                    // Each request's images, in order: its share of the rows of y.
                    let per_image = y.len() / images.max(1);
                    let mut at = 0;
                    for r in group {
                        let len = r.shape.n * per_image;
                        let part = y[at..at + len].to_vec();
                        at += len;
                        r.deferred.resolve(Box::new(move |_| Ok(Float32Array::new(part))));
                    }
                }
                Ok(Err(e)) => {
                    for r in group {
                        r.deferred.reject(invalid(e.clone()));
                    }
                }
                Err(_) => {
                    for r in group {
                        r.deferred.reject(Error::new(Status::GenericFailure, "senet: forward panicked"));
                    }
                }
            }
        }
    }
}

/// A compiled SE-ResNet (or any program of `lib/model/program.ts`).
#[napi]
pub struct NativeModel {
    shared: Option<Arc<Shared>>,
}

#[napi]
impl NativeModel {
    /// Compiles a program: validates it and prepacks every convolution's weights.
    /// The weight arrays are copied; the caller may drop them afterwards.
    #[napi(constructor)]
    pub fn new(ops: Vec<OpSpec>, num_slots: u32, in_channels: u32, num_classes: u32, output: u32) -> Result<Self> {
        let ops = ops.into_iter().enumerate().map(|(i, s)| convert(i, s)).collect::<Result<Vec<_>>>()?;
        let model = Model::new(ops, num_slots as usize, in_channels as usize, num_classes as usize, output as usize)
            .map_err(invalid)?;
        Ok(NativeModel { shared: Some(Arc::new(Shared { model, queue: Mutex::new((VecDeque::new(), false)) })) })
    }

    fn shared(&self) -> Result<&Arc<Shared>> {
        self.shared.as_ref().ok_or_else(|| Error::new(Status::GenericFailure, "the model has been disposed"))
    }

    /// Checks an input against the model (channels, length, minimal size).
    fn check(&self, x: &[f32], n: u32, c: u32, h: u32, w: u32) -> Result<Shape4> {
        let (s, len) = args::shape(n, c, h, w)?;
        args::check_len("x", x.len(), len)?;
        self.shared()?.model.infer_shapes(s).map_err(invalid)?;
        Ok(s)
    }

    /// Forward pass on the calling thread (the pool's threads do the work).
    #[napi]
    pub fn forward_sync(&self, x: Float32ArraySlice, n: u32, c: u32, h: u32, w: u32) -> Result<Float32Array> {
        let s = self.check(&x, n, c, h, w)?;
        let y = self.shared()?.model.forward(&x, s).map_err(invalid)?;
        Ok(Float32Array::new(y))
    }

    /// Forward pass off the JS thread. `x` is copied before this returns.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn forward<'env>(&self, env: &'env Env, x: Float32ArraySlice, n: u32, c: u32, h: u32, w: u32) -> Result<Object<'env>> {
        let shape = self.check(&x, n, c, h, w)?;
        let shared = self.shared()?.clone();
        let (deferred, promise) = env.create_deferred()?;
        let start = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.0.push_back(Request { x: x.to_vec(), shape, deferred });
            !std::mem::replace(&mut q.1, true)
        };
        if start {
            pool::pool().spawn(move || shared.drain());
        }
        Ok(promise)
    }

    /// Releases the compiled weights (once pending forwards have finished).
    #[napi]
    pub fn dispose(&mut self) {
        self.shared = None;
    }
}
