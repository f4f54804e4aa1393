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
    // Read while this (unbound) thread still sees every CPU of the process.
    process_cpus();
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

/// Whether [`team`] holds the pool's threads for a call (default; `SENET_TEAM=0` turns
/// it off, leaving every parallel op to rayon's wake-ups: a measurement aid).
fn team_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("SENET_TEAM").is_ok_and(|v| v.trim() == "0"))
}

/// The number of CPUs this process may run on, read once: by the thread that first
/// builds the senet pool (before any of its threads is bound to one CPU), or by the
/// first caller of [`team_fits`] when no pool was built yet (a bound thread then sees
/// only its own CPU, which errs towards no team).
fn process_cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| match allowed_cpus().len() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    })
}

/// Whether a pool of `threads` may hold a team: no more threads than CPUs this process
/// may run on (else a spinning helper would take CPU time from the thread doing work).
pub(crate) fn team_fits(threads: usize) -> bool {
    threads <= process_cpus()
}

thread_local! {
    /// The team this thread leads, while it runs [`team`]'s closure outside a job.
    static TEAM: std::cell::Cell<*const Team> = const { std::cell::Cell::new(std::ptr::null()) };
}

static TEAM_JOBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many parallel ops have run on a [`team`] in this process so far (a diagnostic:
/// tests check that a forward's ops do).
pub fn team_jobs() -> u64 {
    TEAM_JOBS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `Team::state`: the job generation in the high 32 bits, `OPEN` while helpers may join
/// the current job, and in the low bits the number of helpers inside it.
const OPEN: u64 = 1 << 31;
const INSIDE: u64 = OPEN - 1;

/// The pool's other threads, held for the length of one [`team`] call, each spinning
/// until the leader publishes a job ([`run_on_team`]) and then running it with its own
/// thread index.
pub(crate) struct Team {
    state: std::sync::atomic::AtomicU64,
    quit: std::sync::atomic::AtomicBool,
    /// [`items`]: set when the team's worker has started (only a started worker's team
    /// is waited for by the others: a worker that has not started may be queued behind
    /// them on a thread they occupy).
    started: std::sync::atomic::AtomicBool,
    /// The published job, called with (thread index, whether the caller is the leader):
    /// written by the leader only while no helper is inside a job and before the `OPEN`
    /// state that lets helpers in (Release / Acquire on `state`).
    job: std::cell::UnsafeCell<Option<*const TeamJob<'static>>>,
    size: usize,
    /// A team of [`items`]: the leader runs an item in [`serial`] mode, helpers join
    /// whenever they are free and take tasks from the back of what it has not started.
    tail: bool,
}

type TeamJob<'a> = dyn Fn(usize, bool) + Sync + 'a;

// SAFETY: `job` is written by the leader only while no helper can read it (see the
// field); everything else is atomic.
unsafe impl Sync for Team {}

impl Team {
    fn new(size: usize, tail: bool) -> Team {
        Team {
            state: std::sync::atomic::AtomicU64::new(0),
            quit: std::sync::atomic::AtomicBool::new(false),
            started: std::sync::atomic::AtomicBool::new(false),
            job: std::cell::UnsafeCell::new(None),
            size,
            tail,
        }
    }

    /// Runs `f` with this thread leading `self` (restored on return and unwind).
    fn lead<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                TEAM.with(|t| t.set(std::ptr::null()));
            }
        }
        TEAM.with(|t| t.set(self));
        let _leave = Leave;
        f()
    }

    /// A helper's loop: join every job published after the last one it ran, until quit.
    fn help(&self) {
        use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        let me = rayon::current_thread_index().unwrap_or(0);
        let mut seen = 0u64;
        let mut idle = 0u32;
        while !self.quit.load(Acquire) {
            let s = self.state.load(Acquire);
            if s & OPEN == 0 || s >> 32 == seen {
                // After a long wait (~1 ms), offer the CPU to anything else runnable on
                // every round (returns at once when nothing is).
                idle = idle.saturating_add(1);
                if idle > 1 << 14 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            idle = 0;
            if self.state.compare_exchange_weak(s, s + 1, Acquire, Relaxed).is_err() {
                continue;
            }
            seen = s >> 32;
            struct Out<'a>(&'a Team);
            impl Drop for Out<'_> {
                fn drop(&mut self) {
                    self.0.state.fetch_sub(1, Release);
                }
            }
            let _out = Out(self);
            // SAFETY: joined while the job's state was open, so the leader published
            // `job` before it (Release/Acquire) and waits until this helper is out
            // (`_out`, also on unwind) before the closure it points to is dropped.
            let job = unsafe { &*(*self.job.get()).expect("team job") };
            if self.tail {
                // As the leader runs: any call a task makes stays on this thread.
                serial(|| job(me, false));
            } else {
                job(me, false);
            }
        }
    }

    /// Publishes `job`, runs it on this thread, then closes it and waits until every
    /// helper that joined is out (also when `job` panics here).
    fn run(&self, job: &TeamJob<'_>) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
        struct Close<'a>(&'a Team);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                self.0.state.fetch_and(!OPEN, AcqRel);
                while self.0.state.load(Acquire) & INSIDE != 0 {
                    std::hint::spin_loop();
                }
            }
        }
        TEAM_JOBS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gen = (self.state.load(Acquire) >> 32) + 1;
        // SAFETY: the state is closed with nobody inside (the previous run's Close), so
        // no helper reads `job` now. The lifetime is erased; Close below keeps the
        // closure alive until no helper can use the pointer any more.
        unsafe {
            *self.job.get() = Some(std::mem::transmute::<*const (dyn Fn(usize, bool) + Sync + '_), *const (dyn Fn(usize, bool) + Sync + 'static)>(job));
        }
        let _close = Close(self);
        self.state.store(gen << 32 | OPEN, Release);
        job(rayon::current_thread_index().unwrap_or(0), true);
    }
}

/// Runs `f` (on a thread of the pool, inside [`install`]) with the pool's other threads
/// held as a team: they spin between the parallel ops `f` runs instead of going to
/// sleep, so each op's tasks start on every thread at once. A thread that sleeps takes
/// 30–100 µs to join an op on this VM (`examples/wake_latency.rs`: a 2-thread join
/// after ≥ 50 µs of idleness), longer than many batch-1 ops; rayon's workers sleep
/// after ~30 µs without work, which a forward's serial steps and uneven op ends often
/// exceed. Ops ([`run_on_team`]) then run as before, only their tasks start sooner.
/// Inline when the pool has one thread or more threads than CPUs ([`team_fits`]),
/// inside [`serial`], off the pool, nested, or with `SENET_TEAM=0`. A helper that
/// cannot start (its thread busy with another call's work) is simply not there: its
/// ranges are taken over by the others.
pub fn team<R>(f: impl FnOnce() -> R) -> R {
    let threads = rayon::current_num_threads();
    if threads < 2 || is_serial() || rayon::current_thread_index().is_none() || !TEAM.with(|t| t.get().is_null()) || !team_enabled() || !team_fits(threads) {
        return f();
    }
    let team = Team::new(threads, false);
    rayon::in_place_scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| team.help());
        }
        // Set before the scope waits for the helpers (also on unwind).
        let _quit = Quit(&team);
        team.lead(f)
    })
}

/// Sets a team's `quit` when dropped (also on unwind: its helpers must not spin on).
struct Quit<'a>(&'a Team);
impl Drop for Quit<'_> {
    fn drop(&mut self) {
        self.0.quit.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether [`items`] lets a thread with no item left help the others (default;
/// `SENET_HELP=0` turns it off: a measurement aid).
fn help_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("SENET_HELP").is_ok_and(|v| v.trim() == "0"))
}

/// Runs `item(i)` once for each `i` in `0..n` (called inside [`install`]), each item
/// wholly on one pool thread in [`serial`] mode, the threads taking the items in order
/// as they come free. A thread that finds no item left helps the items still running:
/// each parallel op they run (`for_each_task`) is published to it as to a [`team`]'s
/// helper, and it takes the op's tasks from the back while the item's thread works
/// through them from the front (the item's thread alone runs them in order, as without
/// help). Without this, the thread that ran out of items first idled until the last
/// item ended (seresnet50 batch 8 on 2 threads, instrumented: 0.1–67 ms per forward,
/// median 17, of a ~300 ms per-image phase). The kernels still plan their work for one
/// thread, so results are the same as without help, bit for bit.
///
/// Without help (rayon hands the items out, one per thread at a time) on one thread,
/// on more threads than CPUs ([`team_fits`]), off the pool, inside [`serial`] or a
/// team, or with `SENET_TEAM=0` or `SENET_HELP=0`.
pub fn items(n: usize, item: impl Fn(usize) + Sync) {
    use std::sync::atomic::Ordering::{Acquire, Relaxed};
    let threads = rayon::current_num_threads();
    if threads < 2 || is_serial() || rayon::current_thread_index().is_none() || !TEAM.with(|t| t.get().is_null()) || !team_enabled() || !help_enabled() || !team_fits(threads) {
        use rayon::prelude::*;
        if threads > 1 && !is_serial() {
            (0..n).into_par_iter().with_max_len(1).for_each(|i| serial(|| item(i)));
        } else {
            (0..n).for_each(|i| serial(|| item(i)));
        }
        return;
    }
    let teams: Vec<Team> = (0..threads).map(|_| Team::new(threads, true)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |w: usize| {
        {
            let own = &teams[w];
            own.started.store(true, std::sync::atomic::Ordering::Release);
            // Its helpers leave when it has no item left (or an item panicked).
            let _quit = Quit(own);
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= n {
                    break;
                }
                own.lead(|| serial(|| item(i)));
            }
        }
        // Help the items still running, until none is. (A worker that has not started
        // takes no item now that none is left, so it is not waited for.)
        loop {
            let mut running = false;
            for k in 1..threads {
                let t = &teams[(w + k) % threads];
                if t.started.load(Acquire) && !t.quit.load(Acquire) {
                    running = true;
                    t.help();
                }
            }
            if !running {
                break;
            }
        }
    };
    rayon::in_place_scope(|s| {
        for w in 1..threads {
            let work = &work;
            s.spawn(move |_| work(w));
        }
        work(0);
    })
}

/// The team this thread leads (outside a job), if any: its number of threads, and
/// whether it is a team of [`items`].
pub(crate) fn team_lead() -> Option<(usize, bool)> {
    let t = TEAM.with(|t| t.get());
    // SAFETY: see run_on_team.
    (!t.is_null()).then(|| unsafe { ((*t).size, (*t).tail) })
}

/// Runs `job(thread index, leader?)` on this thread and on each helper of the team it
/// leads that joins in time, and returns true; false (nothing run) when it leads none.
/// While the job runs, calls it makes go to rayon as without a team (or stay on the
/// thread, in [`serial`] mode).
pub(crate) fn run_on_team(job: &TeamJob<'_>) -> bool {
    let t = TEAM.with(|t| t.replace(std::ptr::null()));
    if t.is_null() {
        return false;
    }
    struct Back(*const Team);
    impl Drop for Back {
        fn drop(&mut self) {
            TEAM.with(|t| t.set(self.0));
        }
    }
    let _back = Back(t);
    // SAFETY: TEAM is set only by `Team::lead`, for the length of its call (the team
    // outlives it), on this thread.
    unsafe { &*t }.run(job);
    true
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
