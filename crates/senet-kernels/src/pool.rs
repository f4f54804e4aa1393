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

/// CPUs this process may run on (its affinity mask), in order; empty where unknown.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    let mut mask = [0u64; 16];
    // SAFETY: mask is a 1024-bit cpu_set_t of the size passed; pid 0 = this thread.
    if unsafe { sched_getaffinity(0, std::mem::size_of_val(&mask), mask.as_mut_ptr()) } != 0 {
        return Vec::new();
    }
    (0..1024).filter(|&c| (mask[c / 64] >> (c % 64)) & 1 == 1).collect()
}

#[cfg(target_os = "linux")]
extern "C" {
    fn sched_getaffinity(pid: i32, size: usize, mask: *mut u64) -> i32;
    fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> i32;
}

/// Binds the calling thread to CPU `c` (best effort: an error leaves it unbound).
#[cfg(target_os = "linux")]
fn pin_to(c: usize) {
    let mut one = [0u64; 16];
    one[c / 64] |= 1 << (c % 64);
    // SAFETY: as in allowed_cpus.
    unsafe { sched_setaffinity(0, std::mem::size_of_val(&one), one.as_ptr()) };
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_c: usize) {}

/// CPUs to bind the pool's threads to, one each, or None. By default (Linux) a pool of
/// 2 or more threads that does not outnumber the CPUs the process may use is bound,
/// thread i to the i-th of them: left to the scheduler, the threads of a 2-thread pool
/// were found sharing one CPU after another engine's threads had run (batch-1
/// seresnet50 on 2 threads: 47–48 ms unbound vs 40 ms bound when onnxruntime runs in
/// between; 40 ms either way alone). `SENET_PIN=0` leaves placement to the OS.
fn pin_plan(threads: usize) -> Option<Vec<usize>> {
    if threads < 2 || std::env::var("SENET_PIN").is_ok_and(|v| v.trim() == "0") {
        return None;
    }
    let cpus = allowed_cpus();
    (cpus.len() >= threads).then_some(cpus)
}

fn build(threads: usize) -> Arc<ThreadPool> {
    let plan = pin_plan(threads);
    Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(threads)
            .start_handler(move |i| {
                if let Some(c) = plan.as_ref().and_then(|p| p.get(i)) {
                    pin_to(*c)
                }
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread is never bound; a pool larger than the allowed CPUs is not bound; on
    /// Linux with 2+ CPUs a 2-thread pool's threads end up on distinct CPUs.
    #[test]
    fn pin_plan_binds_only_pools_that_fit() {
        assert!(pin_plan(1).is_none());
        let cpus = allowed_cpus();
        assert!(pin_plan(cpus.len() + 1).is_none());
        #[cfg(target_os = "linux")]
        if cpus.len() >= 2 && std::env::var("SENET_PIN").map_or(true, |v| v.trim() != "0") {
            assert_eq!(pin_plan(2).as_deref(), Some(&cpus[..]));
            let pool = build(2);
            let seen: Vec<Vec<usize>> = pool.broadcast(|_| allowed_cpus());
            assert_eq!(seen.len(), 2);
            assert!(seen.iter().all(|s| s.len() == 1), "each thread bound to one CPU: {seen:?}");
            assert_ne!(seen[0], seen[1], "threads bound to distinct CPUs");
        }
    }
}
