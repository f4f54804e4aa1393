//! Native layers of a forward pass (the ops of `lib/model/program.ts`), float32.
//!
//! - [`blocked`]: the channel-blocked (nChw16c) layout the executor runs the trunk in,
//!   its direct convolution [`blocked::ConvBlk`] (weights prepacked once; bias, residual
//!   and ReLU applied while the output tile is in registers), pooling, add and SE ops.
//! - [`winograd`]: Winograd F(2×2,3×3) / F(4×4,3×3) for 3×3 stride-1 layers, same contract.
//! - [`Conv`]: the per-layer choice between the two.
//! - NCHW / plain ops: [`max_pool2d`], [`global_avg_pool`], [`linear`], [`add_relu`].
//!
//! Every op runs on the crate's one rayon pool ([`crate::pool`]) with the SIMD level of
//! [`crate::simd::level`], and is deterministic: each output element is computed by one
//! task in an order that does not depend on how the work is split, so results are
//! bitwise identical for any thread count.

pub mod blocked;
mod conv;
pub mod winograd;
mod eltwise;
mod linear;
mod pool2d;

pub use conv::Conv;
pub use eltwise::add_relu;
pub use linear::linear;
pub use pool2d::{global_avg_pool, max_pool2d, pool_output_size};

/// A raw pointer that may be shared between the tasks of one parallel loop. Each use
/// site states (in a `// SAFETY:` comment) why the regions the tasks touch are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
impl<T> SyncPtr<T> {
    /// The address. (A method, so that closures capture the whole `Sync` wrapper rather
    /// than its raw-pointer field.)
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: the wrapper only carries the address; every dereference is justified at its
// use site (disjoint writes per task, reads of data nobody writes meanwhile).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

/// Runs `f(i)` for `i` in `0..tasks`: on the senet pool when `parallel`, else inline.
/// The result never depends on the choice, only the speed does.
///
/// Parallel schedule: the tasks are cut into one contiguous range per pool thread, and
/// pool thread k works through range k from its front before it takes tasks from the
/// back of the others' ranges. So with the threads free, thread k runs the same share of
/// every op (the kernels order their tasks so that a range is a region of the output,
/// e.g. the first half of an image's pixels), and reads in the next op much of what it
/// wrote in this one from its own L2 rather than from the other core's.
///
/// Inside [`crate::pool::items`] (one image per thread, `serial`): in order on this
/// thread, with any thread that has no item left taking tasks from the back.
pub(crate) fn for_each_task(tasks: usize, parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if !parallel || tasks <= 1 {
        (0..tasks).for_each(f);
        return;
    }
    if on_team(tasks, &f) {
        return;
    }
    let threads = crate::pool::threads_here();
    if threads <= 1 {
        (0..tasks).for_each(f);
    } else {
        crate::pool::install(|| spread(tasks, threads, &f));
    }
}

/// Inside a [`crate::pool::team`] (a forward's batched ops): [`spread`]'s schedule on
/// the threads the team holds spinning, which start on their ranges without a wake-up.
/// Inside a team of [`crate::pool::items`]: one range, the leader taking tasks from
/// its front and helpers from its back. False (nothing run) when this thread leads no
/// team.
fn on_team(tasks: usize, f: &(impl Fn(usize) + Sync)) -> bool {
    let Some((parts, tail)) = crate::pool::team_lead().filter(|_| tasks <= u32::MAX as usize) else {
        return false;
    };
    if tail {
        let ranges = Ranges::new(tasks, 1);
        return crate::pool::run_on_team(&|_, lead| {
            while let Some(i) = ranges.take(0, lead) {
                f(i);
            }
        });
    }
    let ranges = Ranges::new(tasks, parts);
    crate::pool::run_on_team(&|me, _| ranges.work(me, f))
}

/// The schedule of [`for_each_task`] on the current rayon pool: `f(i)` once for each
/// `i` in `0..tasks`, over `parts` contiguous ranges; pool thread k (mod `parts`) works
/// through range k from its front, then takes tasks from the back of the other ranges
/// (so a thread held up elsewhere, e.g. by another call's work, delays nothing: its
/// range is taken over).
fn spread(tasks: usize, parts: usize, f: &(impl Fn(usize) + Sync)) {
    use rayon::prelude::*;
    if tasks > u32::MAX as usize {
        (0..tasks).into_par_iter().for_each(f);
        return;
    }
    let ranges = Ranges::new(tasks, parts);
    (0..ranges.0.len()).into_par_iter().with_max_len(1).for_each(|_| ranges.work(rayon::current_thread_index().unwrap_or(0), f));
}

/// The contiguous task ranges of [`spread`], one per part: range p is `[lo, hi)` packed
/// as `lo | hi << 32`; its owner takes `lo`, the others `hi − 1`.
struct Ranges(Vec<Padded>);

impl Ranges {
    /// `tasks` (< 2³²) cut into `parts` ranges (at most one per task).
    fn new(tasks: usize, parts: usize) -> Ranges {
        let parts = parts.clamp(1, tasks.max(1));
        Ranges(
            (0..parts)
                .map(|p| {
                    let (lo, hi) = (p * tasks / parts, (p + 1) * tasks / parts);
                    Padded(std::sync::atomic::AtomicU64::new(lo as u64 | (hi as u64) << 32))
                })
                .collect(),
        )
    }

    fn take(&self, p: usize, front: bool) -> Option<usize> {
        use std::sync::atomic::Ordering;
        let r = &self.0[p].0;
        let mut cur = r.load(Ordering::Relaxed);
        loop {
            let (lo, hi) = (cur & 0xffff_ffff, cur >> 32);
            if lo >= hi {
                return None;
            }
            let (next, got) = if front { ((lo + 1) | hi << 32, lo) } else { (lo | (hi - 1) << 32, hi - 1) };
            match r.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(got as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// What thread `thread` does: its own range (index mod parts) from the front, then
    /// the others' from the back, until no task is left.
    fn work(&self, thread: usize, f: &(impl Fn(usize) + Sync)) {
        let parts = self.0.len();
        let me = thread % parts;
        while let Some(i) = self.take(me, true) {
            f(i);
        }
        for k in 1..parts {
            let p = (me + k) % parts;
            while let Some(i) = self.take(p, false) {
                f(i);
            }
        }
    }
}

/// An atomic on a cache line of its own (the ranges of [`spread`] are updated by
/// different threads).
#[repr(align(64))]
struct Padded(std::sync::atomic::AtomicU64);

#[cfg(test)]
mod tests {
    use super::{on_team, spread};
    use crate::pool::{team, team_fits};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Inside a team, every task of every op runs exactly once, on the leader and the
    /// helpers (which join: some op's tasks run on another thread than the leader's), for
    /// many ops in a row, pool sizes 1–4 and any task count; a call nested in a task runs
    /// too (through rayon, not the team); outside a team nothing runs on one.
    #[test]
    fn team_runs_every_task_once_on_all_threads() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let helped = AtomicU32::new(0);
            pool.install(|| {
                assert!(!on_team(4, &|_| ()), "no team yet");
                team(|| {
                    let leader = rayon::current_thread_index();
                    for op in 0..300 {
                        let tasks = [1, 2, 3, 7, 64, 1001][op % 6];
                        let runs: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                        let nested = AtomicU32::new(0);
                        let ran = on_team(tasks, &|i| {
                            if tasks == 64 {
                                std::thread::sleep(std::time::Duration::from_micros(20));
                            }
                            if rayon::current_thread_index() != leader {
                                helped.fetch_add(1, Ordering::Relaxed);
                            }
                            if op % 50 == 0 && i == 0 {
                                super::for_each_task(5, true, |_| {
                                    nested.fetch_add(1, Ordering::Relaxed);
                                });
                            }
                            runs[i].fetch_add(1, Ordering::Relaxed);
                        });
                        // No team on 1 thread, nor on more threads than CPUs.
                        assert_eq!(ran, threads > 1 && team_fits(threads), "{threads} threads");
                        if ran {
                            for (i, r) in runs.iter().enumerate() {
                                assert_eq!(r.load(Ordering::Relaxed), 1, "task {i} of {tasks}, op {op}, {threads} threads");
                            }
                            if op % 50 == 0 {
                                assert_eq!(nested.load(Ordering::Relaxed), 5);
                            }
                        }
                    }
                });
                assert!(!on_team(4, &|_| ()), "the team ended");
            });
            if threads > 1 && team_fits(threads) {
                assert!(helped.load(Ordering::Relaxed) > 0, "no helper ran a task ({threads} threads)");
            }
        }
    }

    /// A task that panics, on the leader or on a helper, reaches the caller of `team`
    /// as a panic (no hang, every helper released); the pool then works as before.
    #[test]
    fn team_passes_a_task_panic_on() {
        if !team_fits(2) {
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for on_leader in [true, false] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| {
                    team(|| {
                        let leader = rayon::current_thread_index();
                        // The first task run on the chosen side panics.
                        for _ in 0..200 {
                            on_team(64, &|_| {
                                std::thread::sleep(std::time::Duration::from_micros(20));
                                if (rayon::current_thread_index() == leader) == on_leader {
                                    panic!("a task");
                                }
                            });
                        }
                    })
                })
            }));
            assert!(r.is_err(), "the panic came through (on leader: {on_leader})");
            let n = AtomicU32::new(0);
            pool.install(|| team(|| on_team(10, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            })));
            assert_eq!(n.load(Ordering::Relaxed), 10);
        }
    }

    /// Teams led from several threads at once on one pool (concurrent forwards): each
    /// leader's helpers may never start (their thread busy leading another team); every
    /// task still runs once and nothing deadlocks.
    #[test]
    fn concurrent_teams_finish() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        pool.install(|| {
                            team(|| {
                                for tasks in [3usize, 17, 64] {
                                    let runs: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                                    assert!(on_team(tasks, &|i| {
                                        runs[i].fetch_add(1, Ordering::Relaxed);
                                    }));
                                    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
                                }
                            })
                        });
                    }
                });
            }
        });
    }

    /// `items`: every item and every task of the ops it runs exactly once, for pool
    /// sizes 1–4 and any item count; items plan for one thread (`threads_here() == 1`)
    /// and helpers run their tasks in serial mode too; with 2+ threads, a long item gets
    /// help (some of its tasks run on another thread) once the short ones are done.
    #[test]
    fn items_run_once_and_the_idle_help() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for n in [0usize, 1, 2, 3, 5, 8] {
                let (ops, tasks) = (12, 8);
                let ran: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                let runs: Vec<AtomicU32> = (0..n * ops * tasks).map(|_| AtomicU32::new(0)).collect();
                let helped = AtomicU32::new(0);
                pool.install(|| {
                    crate::pool::items(n, |i| {
                        ran[i].fetch_add(1, Ordering::Relaxed);
                        assert_eq!(crate::pool::threads_here(), 1);
                        let leader = rayon::current_thread_index();
                        for op in 0..ops {
                            super::for_each_task(tasks, true, |t| {
                                assert!(crate::pool::is_serial());
                                if i == 0 {
                                    // Item 0 is long: the others end and help it.
                                    std::thread::sleep(std::time::Duration::from_micros(300));
                                }
                                if rayon::current_thread_index() != leader {
                                    helped.fetch_add(1, Ordering::Relaxed);
                                }
                                runs[(i * ops + op) * tasks + t].fetch_add(1, Ordering::Relaxed);
                            });
                        }
                    })
                });
                assert!(ran.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads, {n} items");
                assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads, {n} items");
                if threads > 1 && team_fits(threads) && n >= 2 && n <= threads {
                    assert!(helped.load(Ordering::Relaxed) > 0, "no help ({threads} threads, {n} items)");
                }
            }
        }
    }

    /// A task of an item that panics, on the item's thread or on a helper, reaches the
    /// caller of `items` as a panic (no hang); the pool then works as before.
    #[test]
    fn items_pass_a_task_panic_on() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for on_leader in [true, false] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| {
                    crate::pool::items(2, |i| {
                        let leader = rayon::current_thread_index();
                        for _ in 0..if i == 0 { 200 } else { 1 } {
                            super::for_each_task(16, true, |_| {
                                std::thread::sleep(std::time::Duration::from_micros(50));
                                if i == 0 && (rayon::current_thread_index() == leader) == on_leader {
                                    panic!("a task");
                                }
                            });
                        }
                    })
                })
            }));
            // Without help (1 CPU), no task runs off the leader's thread.
            assert!(r.is_err() || (!on_leader && !team_fits(2)), "the panic came through (on leader: {on_leader})");
            let n = AtomicU32::new(0);
            pool.install(|| crate::pool::items(3, |_| super::for_each_task(10, true, |_| {
                n.fetch_add(1, Ordering::Relaxed);
            })));
            assert_eq!(n.load(Ordering::Relaxed), 30);
        }
    }

    /// `items` called from several threads at once on one pool (concurrent batch
    /// forwards; a worker may start late or never, its thread busy with another call's
    /// item or helping it): every item and task runs once and nothing deadlocks.
    #[test]
    fn concurrent_items_finish() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        std::thread::scope(|s| {
            for c in 0..4 {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..10 {
                        let n = 1 + (c + round) % 4;
                        let runs: Vec<AtomicU32> = (0..n * 24).map(|_| AtomicU32::new(0)).collect();
                        pool.install(|| {
                            crate::pool::items(n, |i| {
                                for op in 0..3 {
                                    super::for_each_task(8, true, |t| {
                                        if t % 3 == 0 {
                                            std::thread::sleep(std::time::Duration::from_micros(30));
                                        }
                                        runs[i * 24 + op * 8 + t].fetch_add(1, Ordering::Relaxed);
                                    });
                                }
                            })
                        });
                        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "caller {c}, round {round}");
                    }
                });
            }
        });
    }

    /// Every task runs exactly once, whatever the pool size, the number of ranges and
    /// the tasks (fewer tasks than ranges, uneven ranges), also when one thread is slow
    /// and its range is taken over by the others.
    #[test]
    fn spread_runs_every_task_once() {
        for threads in 1..=4 {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for parts in 1..=5 {
                for tasks in [1, 2, 3, 7, 64, 1001] {
                    for slow in [false, true] {
                        let runs: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                        pool.install(|| {
                            spread(tasks, parts, &|i| {
                                if slow && rayon::current_thread_index() == Some(0) {
                                    std::thread::sleep(std::time::Duration::from_micros(200));
                                }
                                runs[i].fetch_add(1, Ordering::Relaxed);
                            })
                        });
                        for (i, r) in runs.iter().enumerate() {
                            assert_eq!(r.load(Ordering::Relaxed), 1, "task {i} of {tasks}, {parts} ranges, {threads} threads, slow {slow}");
                        }
                    }
                }
            }
        }
    }

    /// With the threads free, thread k runs range k (what makes consecutive ops reuse
    /// their own core's cache): on 2 threads, tasks long enough for both threads to have
    /// started. A thread never starts on the other's range (thread 0 always runs task 0,
    /// thread 1, if it runs any, task 4); the exact split is required in one of 5 tries
    /// (a thread woken late on a busy machine leaves its range to the other).
    #[test]
    fn spread_gives_each_thread_its_own_range() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let tasks = 8;
        let mut exact = false;
        for _ in 0..5 {
            let who: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(u32::MAX)).collect();
            pool.install(|| {
                spread(tasks, 2, &|i| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    who[i].store(rayon::current_thread_index().unwrap() as u32, Ordering::Relaxed);
                })
            });
            let who: Vec<u32> = who.iter().map(|w| w.load(Ordering::Relaxed)).collect();
            assert_eq!(who[0], 0, "{who:?}");
            assert!(who[4] == 1 || !who.contains(&1), "{who:?}");
            exact |= who == [0, 0, 0, 0, 1, 1, 1, 1];
        }
        assert!(exact, "thread 1 never ran its own range");
    }
}
