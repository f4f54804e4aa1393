//! The one process-wide rayon thread pool every kernel runs on.
//!
//! Owned by this crate rather than rayon's global pool so that its size can be changed
//! at runtime (`setNumThreads`) and so that it never competes with another library's use
//! of the global pool in the same process. Kernels call [`install`] once at their entry;
//! nested calls from inside the pool run inline (rayon does not nest pools).

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, OnceLock, RwLock};

struct PoolState {
    pool: Arc<ThreadPool>,
    threads: usize,
}

static POOL: OnceLock<RwLock<PoolState>> = OnceLock::new();

fn default_threads() -> usize {
    if let Some(n) = std::env::var("SENET_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n.min(MAX_THREADS);
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(MAX_THREADS)
}

/// Upper bound accepted by [`set_num_threads`].
pub const MAX_THREADS: usize = 256;

fn build(threads: usize) -> Arc<ThreadPool> {
    Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("senet-{i}"))
            .build()
            .expect("cannot start the senet thread pool"),
    )
}

fn state() -> &'static RwLock<PoolState> {
    POOL.get_or_init(|| {
        let threads = default_threads();
        RwLock::new(PoolState { pool: build(threads), threads })
    })
}

/// The pool kernels run on now. Holding the `Arc` keeps it alive even if the size is
/// changed meanwhile; the next call then gets the new pool.
pub fn pool() -> Arc<ThreadPool> {
    state().read().unwrap_or_else(|e| e.into_inner()).pool.clone()
}

/// Number of threads of the current pool.
pub fn num_threads() -> usize {
    state().read().unwrap_or_else(|e| e.into_inner()).threads
}

/// Resizes the pool (1..=MAX_THREADS). Work already running finishes on the old pool.
pub fn set_num_threads(n: usize) -> Result<(), String> {
    if n == 0 || n > MAX_THREADS {
        return Err(format!("thread count must be 1..={MAX_THREADS}, got {n}"));
    }
    let mut st = state().write().unwrap_or_else(|e| e.into_inner());
    if st.threads != n {
        st.pool = build(n);
        st.threads = n;
    }
    Ok(())
}

/// Runs `f` inside the pool (inline when already on one of its threads).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        // Already on a rayon worker (ours, or a caller's): do not nest pools.
        return f();
    }
    pool().install(f)
}

thread_local! {
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every kernel it calls on this thread kept on this thread: no task is
/// split off to the pool. The model executor uses it to run one image per thread
/// (`graph::Model::forward` on a batch), where splitting each op again would only add
/// synchronisation. Results are the same either way (the kernels never depend on the
/// split), only the speed differs.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Whether this thread is inside [`serial`].
pub fn is_serial() -> bool {
    SERIAL.with(|s| s.get())
}

/// Threads a kernel called here may split its work across: 1 inside [`serial`], else
/// the pool's size.
pub fn threads_here() -> usize {
    if is_serial() {
        1
    } else {
        num_threads()
    }
}

/// Minimum work (in f32 elements touched) a task must have before it is split across
/// threads: below this, waking threads costs more than it saves.
pub const PAR_GRAIN: usize = 1 << 15;
