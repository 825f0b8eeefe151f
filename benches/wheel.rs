//! Timer benchmarks: liveline's wheel and idle tracker against the two structures a Rust
//! user would otherwise reach for, at 100k and 1M live timers.
//!
//! - `delay_queue`: tokio-util's `DelayQueue`, used the way a tokio user writes idle
//!   timeouts: one entry per connection, `reset` on every read (eager re-arm). It runs on a
//!   current-thread runtime with the time driver, on real time.
//! - `binary_heap`: `std::collections::BinaryHeap` with lazy deletion: every touch pushes a
//!   fresh `(deadline, connection, generation)`, and stale entries are skipped when popped.
//! - `liveline`: `Wheel` plus `IdleTracker`: a touch is one store, the wheel entry is
//!   re-inserted lazily once per period.
//!
//! Ticks are 10 ms, so the 30 s idle period is 3,000 ticks, inside one rotation of the
//! default 4,096-slot wheel. Set-up work is never timed (`iter_custom`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use liveline::idle::{IdleConfig, IdleTracker};
use liveline::time::Tick;
use liveline::wheel::{TimerKey, Wheel};
use tokio::runtime::Runtime;
use tokio_util::time::{delay_queue, DelayQueue};

const SIZES: [usize; 2] = [100_000, 1_000_000];
/// One tick of wall time, for the `DelayQueue` peer that works in real time.
const TICK: Duration = Duration::from_millis(10);
/// The idle period in ticks (30 s).
const PERIOD: u32 = 3_000;
/// Touches per connection per period in the idle workload.
const TOUCHES: u32 = 4;
/// Operations timed between two untimed clean-ups.
const CHUNK: usize = 1_024;
/// Expirations taken per `Wheel::poll` call, as an engine would cap them.
const CAP: usize = 1_024;
/// Random deadlines are drawn from a pool of this size (a power of two).
const POOL: usize = 1 << 16;

type HeapEntry = (Reverse<u32>, u32, u32);

/// SplitMix64: deterministic, and fast enough to precompute pools with.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u32) -> u32 {
        (((self.next() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Deadlines 1..=PERIOD ticks ahead.
    fn deadlines(&mut self) -> Vec<u32> {
        (0..POOL).map(|_| 1 + self.below(PERIOD)).collect()
    }

    fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i as u32 + 1) as usize);
        }
        p
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime with a timer")
}

fn ticks(n: u32) -> Duration {
    TICK * n
}

fn micro(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
}

fn heavy(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(2));
}

fn wheel_with(n: usize, pool: &[u32]) -> (Wheel, Vec<TimerKey>) {
    let mut wheel = Wheel::new();
    wheel.reserve(n + CHUNK);
    let keys = (0..n)
        .map(|i| wheel.insert(Tick(pool[i % POOL]), i as u32))
        .collect();
    (wheel, keys)
}

fn queue_with(n: usize, pool: &[u32]) -> (DelayQueue<u32>, Vec<delay_queue::Key>) {
    let mut dq = DelayQueue::with_capacity(n + CHUNK);
    let keys = (0..n)
        .map(|i| dq.insert(i as u32, ticks(pool[i % POOL])))
        .collect();
    (dq, keys)
}

fn heap_with(n: usize, pool: &[u32]) -> BinaryHeap<HeapEntry> {
    (0..n)
        .map(|i| (Reverse(pool[i % POOL]), i as u32, 0))
        .collect()
}

/// Insert into a structure already holding `n` timers; the inserted ones are removed again,
/// untimed, after every chunk. Two orders of deadlines: random over the period, and the
/// engine's order, where each new timer is due a period from a "now" that advances one
/// tick every 33 inserts (100k connections re-armed over a 30 s period), so that
/// consecutive inserts share a slot.
fn insert(c: &mut Criterion, rt: &Runtime) {
    let _rt = rt.enter();
    let mut g = c.benchmark_group("insert");
    micro(&mut g);
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut rng = Rng(n as u64);
        let random = rng.deadlines();
        let ordered: Vec<u32> = (0..POOL).map(|i| 1 + (i as u32 / 33) % PERIOD).collect();
        for (suffix, pool) in [("", &random), ("_engine_order", &ordered)] {
            insert_with(&mut g, n, &random, pool, suffix);
        }
    }
    g.finish();
}

/// The insert benchmarks of one deadline order: `base` fills the structures, `pool` gives
/// the inserted deadlines.
fn insert_with(
    g: &mut BenchmarkGroup<'_, WallTime>,
    n: usize,
    base_pool: &[u32],
    pool: &[u32],
    suffix: &str,
) {
    let (mut wheel, _) = wheel_with(n, base_pool);
    let mut fresh = Vec::with_capacity(CHUNK);
    let mut at = 0;
    g.bench_function(BenchmarkId::new(format!("liveline{suffix}"), n), |b| {
        b.iter_custom(|iters| {
            in_chunks(iters, |left| {
                let batch = left.min(CHUNK);
                let took = timed(|| {
                    for j in 0..batch {
                        fresh.push(wheel.insert(Tick(pool[(at + j) % POOL]), j as u32));
                    }
                });
                at += batch;
                // Newest first: each is then its slot's head and goes straight back to the
                // free list, as the records a poll recycles do in a running engine.
                for key in fresh.drain(..).rev() {
                    wheel.cancel(key);
                }
                (batch, took)
            })
        });
    });
    drop(wheel);

    let (mut dq, _) = queue_with(n, base_pool);
    let mut fresh = Vec::with_capacity(CHUNK);
    g.bench_function(BenchmarkId::new(format!("delay_queue{suffix}"), n), |b| {
        b.iter_custom(|iters| {
            in_chunks(iters, |left| {
                let batch = left.min(CHUNK);
                let took = timed(|| {
                    for j in 0..batch {
                        fresh.push(dq.insert(j as u32, ticks(pool[(at + j) % POOL])));
                    }
                });
                at += batch;
                for key in fresh.drain(..) {
                    dq.remove(&key);
                }
                (batch, took)
            })
        });
    });
    drop(dq);

    let base = heap_with(n, base_pool);
    let mut heap = base.clone();
    g.bench_function(BenchmarkId::new(format!("binary_heap{suffix}"), n), |b| {
        b.iter_custom(|iters| {
            in_chunks(iters, |left| {
                let batch = left.min(CHUNK);
                let took = timed(|| {
                    for j in 0..batch {
                        heap.push((Reverse(pool[(at + j) % POOL]), j as u32, 0));
                    }
                });
                at += batch;
                if heap.len() >= n + n / 8 {
                    heap.clone_from(&base);
                }
                (batch, took)
            })
        });
    });
}

/// Times `iters` operations done chunk by chunk: `chunk(left)` does some of the `left`
/// operations (with any untimed set-up or clean-up of its own) and returns how many it
/// did and how long its timed part took.
fn in_chunks(iters: u64, mut chunk: impl FnMut(usize) -> (usize, Duration)) -> Duration {
    let (mut left, mut total) = (iters as usize, Duration::ZERO);
    while left > 0 {
        let (done, took) = chunk(left);
        left -= done;
        total += took;
    }
    total
}

/// Polls `tick` until nothing due is left, in calls capped at `CAP` as an engine caps
/// them, and hands each fired timer to `fire`.
fn fire_tick(
    wheel: &mut Wheel,
    tick: Tick,
    out: &mut Vec<(TimerKey, u32)>,
    mut fire: impl FnMut(&mut Wheel, TimerKey, u32),
) {
    loop {
        out.clear();
        let fired = wheel.poll(tick, out, CAP);
        for &(key, value) in out.iter() {
            fire(wheel, key, value);
        }
        if fired < CAP {
            break;
        }
    }
}

/// How long `f` takes.
fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Cancel random live timers out of `n` (a connection closing): the timers are cold. The
/// keys of each chunk are gathered first, untimed, as a connection has its key at hand;
/// each cancelled timer is re-inserted, untimed, after the chunk. The heap's lazy cancel is
/// a generation bump; its real cost is paid later, at pop time.
fn cancel(c: &mut Criterion, rt: &Runtime) {
    let _rt = rt.enter();
    let mut g = c.benchmark_group("cancel");
    micro(&mut g);
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut rng = Rng(n as u64 + 1);
        let pool = rng.deadlines();
        let order = rng.permutation(n);
        let mut at = 0;
        // The next `batch` connections in random order, without wrapping inside a chunk.
        let mut next_batch = move |left: usize| {
            let batch = left.min(CHUNK).min(n - at);
            let range = at..at + batch;
            at = if at + batch == n { 0 } else { at + batch };
            range
        };

        let (mut wheel, mut keys) = wheel_with(n, &pool);
        let mut hand = Vec::with_capacity(CHUNK);
        g.bench_function(BenchmarkId::new("liveline", n), |b| {
            b.iter_custom(|iters| {
                in_chunks(iters, |left| {
                    let range = next_batch(left);
                    hand.clear();
                    hand.extend(order[range.clone()].iter().map(|&i| keys[i as usize]));
                    let took = timed(|| {
                        for &key in &hand {
                            black_box(wheel.cancel(key));
                        }
                    });
                    for &i in &order[range.clone()] {
                        keys[i as usize] = wheel.insert(Tick(pool[i as usize % POOL]), i);
                    }
                    (range.len(), took)
                })
            });
        });
        drop(wheel);

        let (mut dq, mut keys) = queue_with(n, &pool);
        let mut hand = Vec::with_capacity(CHUNK);
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                in_chunks(iters, |left| {
                    let range = next_batch(left);
                    hand.clear();
                    hand.extend(order[range.clone()].iter().map(|&i| keys[i as usize]));
                    let took = timed(|| {
                        for key in &hand {
                            black_box(dq.remove(key));
                        }
                    });
                    for &i in &order[range.clone()] {
                        keys[i as usize] = dq.insert(i, ticks(pool[i as usize % POOL]));
                    }
                    (range.len(), took)
                })
            });
        });
        drop(dq);

        let heap = heap_with(n, &pool);
        let mut generation = vec![0u32; n];
        g.bench_function(BenchmarkId::new("binary_heap", n), |b| {
            b.iter_custom(|iters| {
                let total = in_chunks(iters, |left| {
                    let range = next_batch(left);
                    let took = timed(|| {
                        for &i in &order[range.clone()] {
                            let g = &mut generation[i as usize];
                            *g = g.wrapping_add(1);
                        }
                    });
                    (range.len(), took)
                });
                black_box(&generation);
                total
            });
        });
        drop(heap);
    }
    g.finish();
}

/// Cancel timers right after inserting them (a connect timeout or handshake deadline that
/// is met quickly): the timers are hot. Each chunk is inserted untimed, then cancelled.
fn cancel_recent(c: &mut Criterion, rt: &Runtime) {
    let _rt = rt.enter();
    let mut g = c.benchmark_group("cancel_recent");
    micro(&mut g);
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut rng = Rng(n as u64 + 4);
        let pool = rng.deadlines();
        let mut at = 0;

        let (mut wheel, _) = wheel_with(n, &pool);
        let mut fresh = Vec::with_capacity(CHUNK);
        g.bench_function(BenchmarkId::new("liveline", n), |b| {
            b.iter_custom(|iters| {
                in_chunks(iters, |left| {
                    let batch = left.min(CHUNK);
                    for j in 0..batch {
                        fresh.push(wheel.insert(Tick(pool[(at + j) % POOL]), j as u32));
                    }
                    at += batch;
                    let took = timed(|| {
                        for key in fresh.drain(..) {
                            black_box(wheel.cancel(key));
                        }
                    });
                    (batch, took)
                })
            });
        });
        drop(wheel);

        let (mut dq, _) = queue_with(n, &pool);
        let mut fresh = Vec::with_capacity(CHUNK);
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                in_chunks(iters, |left| {
                    let batch = left.min(CHUNK);
                    for j in 0..batch {
                        fresh.push(dq.insert(j as u32, ticks(pool[(at + j) % POOL])));
                    }
                    at += batch;
                    let took = timed(|| {
                        for key in fresh.drain(..) {
                            black_box(dq.remove(&key));
                        }
                    });
                    (batch, took)
                })
            });
        });
    }
    g.finish();
}

/// Connections close and others open in their place, with nothing polled: each operation
/// cancels a random live timer and inserts a new one, and all of it is timed. So the
/// deferred cost of a cancel is inside the figure: the wheel's dead records are recycled by
/// its reclaim passes, and the heap's stale entries by a compaction (`retain`) whenever
/// they are as many as the live ones, as a long-running lazy heap must do.
fn churn(c: &mut Criterion, rt: &Runtime) {
    let _rt = rt.enter();
    let mut g = c.benchmark_group("churn");
    micro(&mut g);
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut rng = Rng(n as u64 + 9);
        let pool = rng.deadlines();
        // Which connection each operation replaces.
        let picks: Vec<u32> = (0..POOL).map(|_| rng.below(n as u32)).collect();
        let mut at = 0;
        // The connection and the new deadline of the next operation.
        let mut next = {
            let (picks, pool) = (&picks, &pool);
            move || {
                at += 1;
                (picks[at % POOL] as usize, pool[(at * 7) % POOL])
            }
        };

        let (mut wheel, mut keys) = wheel_with(n, &pool);
        g.bench_function(BenchmarkId::new("liveline", n), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let (i, deadline) = next();
                        black_box(wheel.cancel(keys[i]));
                        keys[i] = wheel.insert(Tick(deadline), i as u32);
                    }
                })
            });
        });
        drop(wheel);

        let (mut dq, mut keys) = queue_with(n, &pool);
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let (i, deadline) = next();
                        black_box(dq.remove(&keys[i]));
                        keys[i] = dq.insert(i as u32, ticks(deadline));
                    }
                })
            });
        });
        drop(dq);

        let mut heap = heap_with(n, &pool);
        let mut generation = vec![0u32; n];
        g.bench_function(BenchmarkId::new("binary_heap", n), |b| {
            b.iter_custom(|iters| {
                timed(|| {
                    for _ in 0..iters {
                        let (i, deadline) = next();
                        let current = &mut generation[i];
                        *current = current.wrapping_add(1);
                        heap.push((Reverse(deadline), i as u32, *current));
                        if heap.len() >= 2 * n {
                            heap.retain(|&(_, i, stamp)| generation[i as usize] == stamp);
                        }
                    }
                })
            });
        });
    }
    g.finish();
}

/// Record activity on connections in turn, as the reactor does after each read.
fn touch(c: &mut Criterion, rt: &Runtime) {
    let _rt = rt.enter();
    let mut g = c.benchmark_group("touch");
    micro(&mut g);
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut rng = Rng(n as u64 + 2);
        let pool = rng.deadlines();

        let cfg = IdleConfig::from_ticks(Some(PERIOD), None, None);
        let mut wheel = Wheel::new();
        let mut conns: Vec<IdleTracker> = (0..n)
            .map(|i| {
                let mut conn = IdleTracker::new(Tick(0));
                conn.arm(&cfg, &mut wheel, Tick(0), i as u32, None);
                conn
            })
            .collect();
        let mut now = 1u32;
        let mut at = 0;
        g.bench_function(BenchmarkId::new("liveline", n), |b| {
            b.iter_custom(|iters| {
                let mut left = iters as usize;
                let start = Instant::now();
                while left > 0 {
                    let batch = left.min(n - at);
                    let tick = Tick(black_box(now));
                    for conn in &mut conns[at..at + batch] {
                        conn.record_read(tick);
                    }
                    at += batch;
                    left -= batch;
                    if at == n {
                        at = 0;
                        now += 1;
                    }
                }
                let total = start.elapsed();
                black_box(&conns);
                total
            });
        });
        drop((conns, wheel));

        let (mut dq, keys) = queue_with(n, &pool);
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    dq.reset(&keys[at], ticks(PERIOD));
                    at += 1;
                    if at == n {
                        at = 0;
                    }
                }
                start.elapsed()
            });
        });
        drop(dq);

        let base = heap_with(n, &pool);
        let mut heap = base.clone();
        let mut generation = vec![0u32; n];
        g.bench_function(BenchmarkId::new("binary_heap", n), |b| {
            b.iter_custom(|iters| {
                in_chunks(iters, |left| {
                    let batch = left.min(CHUNK).min(n - at);
                    let deadline = black_box(now) + PERIOD;
                    let took = timed(|| {
                        for (i, g) in generation[at..at + batch].iter_mut().enumerate() {
                            *g = g.wrapping_add(1);
                            heap.push((Reverse(deadline), (at + i) as u32, *g));
                        }
                    });
                    at += batch;
                    if at == n {
                        at = 0;
                        now += 1;
                    }
                    if heap.len() >= 2 * n {
                        heap.clone_from(&base);
                    }
                    (batch, took)
                })
            });
        });
    }
    g.finish();
}

/// Poll for expirations when nothing is due. One iteration is one rotation's worth of
/// polls (4,095), each one tick after the previous.
fn poll_nothing_due(c: &mut Criterion, rt: &Runtime) {
    const POLLS: u32 = 4_095;
    let _rt = rt.enter();
    let mut g = c.benchmark_group("poll_nothing_due");
    // The wheel has to cross its one occupied slot, untimed, once per iteration; short
    // timed budgets keep the untimed share affordable.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(60));
    g.throughput(Throughput::Elements(u64::from(POLLS)));
    for n in SIZES {
        let mut rng = Rng(n as u64 + 3);
        let pool = rng.deadlines();

        // All timers in slot 0, hundreds of thousands of rotations ahead: ticks 1..=4095 of
        // each rotation have nothing due and an empty slot.
        let mut wheel = Wheel::with_slots_at(4_096, Tick(1));
        for i in 0..n {
            wheel.insert(Tick(4_096 * (200_000 + (i as u32 % 8))), i as u32);
        }
        let mut out = Vec::with_capacity(CAP);
        let mut base = 0u32;
        g.bench_function(BenchmarkId::new("liveline", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for t in 1..=POLLS {
                        black_box(wheel.poll(Tick(base + t), &mut out, CAP));
                    }
                    total += start.elapsed();
                    base += 4_096;
                    // The occupied slot: every timer is walked and stays.
                    assert_eq!(wheel.poll(Tick(base), &mut out, CAP), 0);
                }
                total
            });
        });
        drop(wheel);

        let (mut dq, _keys) = queue_with(n, &pool);
        let mut cx = Context::from_waker(Waker::noop());
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..POLLS {
                        assert!(dq.poll_expired(&mut cx).is_pending());
                    }
                }
                start.elapsed()
            });
        });
        drop(dq);

        let heap = heap_with(n, &pool);
        g.bench_function(BenchmarkId::new("binary_heap", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for t in 0..POLLS {
                        let now = black_box(t / 4_096);
                        black_box(heap.peek().is_some_and(|e| e.0 .0 <= now));
                    }
                }
                start.elapsed()
            });
        });
    }
    g.finish();
}

/// Timers expire, but their connections were active half a period ago: each is re-inserted
/// for the remainder (the lazy path). One iteration processes every timer once.
/// `liveline_wheel_only` is the wheel's part of it: the same timers put back by the
/// caller, with no tracker read.
fn fire_reinsert(c: &mut Criterion, rt: &Runtime) {
    const HALF: u32 = PERIOD / 2;
    let mut g = c.benchmark_group("fire_reinsert");
    heavy(&mut g);
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));

        // Deadlines spread over a window of half a period; a round walks that window tick
        // by tick, so each timer fires once per round. In the realistic layout, timers that
        // fire together belong to connections scattered over memory; in the "ordered" one
        // they are neighbours, which shows the cost of the wheel itself without cache misses.
        let t0 = PERIOD;
        let scattered = |i: usize| i as u32 % HALF;
        let ordered = |i: usize| (i as u64 * u64::from(HALF) / n as u64) as u32;
        let layouts: [(&str, &dyn Fn(usize) -> u32); 2] =
            [("liveline", &scattered), ("liveline_ordered", &ordered)];
        for (name, phase) in layouts {
            let cfg = IdleConfig::from_ticks(Some(PERIOD), None, None);
            let mut wheel = Wheel::with_slots_at(4_096, Tick(t0));
            let mut conns: Vec<IdleTracker> = (0..n)
                .map(|i| {
                    let mut conn = IdleTracker::new(Tick(t0 - PERIOD + phase(i)));
                    conn.arm(&cfg, &mut wheel, Tick(t0), i as u32, None);
                    conn
                })
                .collect();
            let mut out = Vec::with_capacity(CAP);
            let mut now = t0;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for conn in &mut conns {
                            let due = conn.next_deadline(&cfg).expect("read idle is on");
                            conn.record_read(due.wrapping_sub(HALF));
                        }
                        let mut events = 0;
                        let start = Instant::now();
                        for _ in 0..HALF {
                            let tick = Tick(now);
                            fire_tick(&mut wheel, tick, &mut out, |wheel, key, i| {
                                let conn = &mut conns[i as usize];
                                events += conn.on_timer(&cfg, wheel, key, tick, i, None).len();
                            });
                            now += 1;
                        }
                        total += start.elapsed();
                        assert_eq!(events, 0, "every connection was active");
                        assert_eq!(wheel.len(), n);
                    }
                    total
                });
            });
            drop((conns, wheel));
        }

        // The wheel's share of the scattered case: the same timers, each put back half a
        // period on when it fires, with no tracker read (no connection state touched).
        let mut wheel = Wheel::with_slots_at(4_096, Tick(t0));
        for i in 0..n {
            wheel.insert(Tick(t0 + scattered(i)), i as u32);
        }
        let mut out = Vec::with_capacity(CAP);
        let mut now = t0;
        g.bench_function(BenchmarkId::new("liveline_wheel_only", n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..HALF {
                        let tick = Tick(now);
                        fire_tick(&mut wheel, tick, &mut out, |wheel, _, i| {
                            wheel.insert(tick.wrapping_add(HALF), i);
                        });
                        now += 1;
                    }
                    assert_eq!(wheel.len(), n);
                }
                start.elapsed()
            });
        });
        drop(wheel);

        let mut last_read: Vec<u32> = (0..n).map(|i| t0 - PERIOD + i as u32 % HALF).collect();
        let mut armed: Vec<u32> = last_read.iter().map(|&t| t + PERIOD).collect();
        let mut heap: BinaryHeap<HeapEntry> =
            (0..n).map(|i| (Reverse(armed[i]), i as u32, 0)).collect();
        let mut now = t0;
        g.bench_function(BenchmarkId::new("binary_heap", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for (read, &due) in last_read.iter_mut().zip(&armed) {
                        *read = due - HALF;
                    }
                    let mut events = 0;
                    let start = Instant::now();
                    for _ in 0..HALF {
                        while let Some(&(Reverse(due), i, gen)) = heap.peek() {
                            if due > now {
                                break;
                            }
                            heap.pop();
                            // Every entry is current here (no touches push): re-arm.
                            let next = last_read[i as usize] + PERIOD;
                            if next > now {
                                heap.push((Reverse(next), i, gen));
                                armed[i as usize] = next;
                            } else {
                                events += 1;
                            }
                        }
                        now += 1;
                    }
                    total += start.elapsed();
                    assert_eq!(events, 0);
                }
                total
            });
        });
        drop(heap);

        // Real time: the timers are set a tick ahead and waited for, untimed; the timed part
        // takes every expired timer out and re-inserts it for the remainder.
        let _rt = rt.enter();
        let mut dq: DelayQueue<u32> = DelayQueue::with_capacity(n);
        let mut keys: Vec<delay_queue::Key> = Vec::with_capacity(n);
        g.bench_function(BenchmarkId::new("delay_queue", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for key in keys.drain(..) {
                        dq.remove(&key);
                    }
                    for i in 0..n {
                        dq.insert(i as u32, TICK);
                    }
                    std::thread::sleep(TICK * 3);
                    let start = Instant::now();
                    rt.block_on(async {
                        while keys.len() < n {
                            let expired = poll_fn(|cx| dq.poll_expired(cx))
                                .await
                                .expect("n timers are due");
                            keys.push(dq.insert(expired.into_inner(), ticks(HALF)));
                        }
                    });
                    total += start.elapsed();
                }
                total
            });
        });
    }
    g.finish();
}

/// The workload the wheel is built for: `n` connections, each active `TOUCHES` times per
/// idle period, none idle. One iteration is one period: every tick, the connections due a
/// touch are touched, then the timers are polled.
///
/// - liveline: a store per touch; each timer fires once per period and is re-inserted.
/// - `DelayQueue`: `reset` per touch (eager); nothing ever expires; one `poll_expired` a
///   tick.
/// - `BinaryHeap`: a push per touch; `TOUCHES` stale entries per connection popped per
///   period.
///
/// Two layouts: "scattered" connections touched on the same tick lie far apart in memory
/// (every touch and every firing is a cache miss, the worst case); "ordered" ones are
/// neighbours (as when the connection's state is already in cache from the read that
/// caused the touch).
fn idle_workload(c: &mut Criterion, rt: &Runtime) {
    const STRIDE: u32 = PERIOD / TOUCHES;
    let mut g = c.benchmark_group("idle_workload");
    heavy(&mut g);
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        for ordered in [false, true] {
            idle_layout(&mut g, rt, n, ordered, STRIDE);
        }
    }
    g.finish();
}

fn idle_layout(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    n: usize,
    ordered: bool,
    stride: u32,
) {
    let name = |base: &str| {
        if ordered {
            format!("{base}_ordered")
        } else {
            base.to_owned()
        }
    };
    // Connection i is touched on the ticks congruent to phase(i) modulo `stride`.
    let phase = |i: usize| {
        if ordered {
            (i as u64 * u64::from(stride) / n as u64) as u32
        } else {
            i as u32 % stride
        }
    };
    let touched = |t: u32| {
        let p = (t % stride) as usize;
        if ordered {
            let s = stride as usize;
            ((p * n).div_ceil(s)..((p + 1) * n).div_ceil(s)).step_by(1)
        } else {
            (p..n).step_by(stride as usize)
        }
    };
    let t0 = PERIOD;
    let last_touch = |i: usize| t0 - stride + phase(i);

    let cfg = IdleConfig::from_ticks(Some(PERIOD), None, None);
    let mut wheel = Wheel::with_slots_at(4_096, Tick(t0));
    let mut conns: Vec<IdleTracker> = (0..n)
        .map(|i| {
            let mut conn = IdleTracker::new(Tick(last_touch(i)));
            conn.arm(&cfg, &mut wheel, Tick(t0), i as u32, None);
            conn
        })
        .collect();
    let mut out = Vec::with_capacity(CAP);
    let mut now = t0;
    let mut period = |conns: &mut [IdleTracker], wheel: &mut Wheel, now: &mut u32| {
        let mut events = 0;
        for _ in 0..PERIOD {
            let tick = Tick(*now);
            for i in touched(*now) {
                conns[i].record_read(tick);
            }
            fire_tick(wheel, tick, &mut out, |wheel, key, i| {
                let conn = &mut conns[i as usize];
                events += conn.on_timer(&cfg, wheel, key, tick, i, None).len();
            });
            *now += 1;
        }
        assert_eq!(events, 0, "no connection is idle");
    };
    // One untimed period reaches the steady state.
    period(&mut conns, &mut wheel, &mut now);
    g.bench_function(BenchmarkId::new(name("liveline"), n), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                period(&mut conns, &mut wheel, &mut now);
            }
            start.elapsed()
        });
    });
    drop((conns, wheel));

    let mut heap: BinaryHeap<HeapEntry> = BinaryHeap::with_capacity(TOUCHES as usize * n);
    heap.extend((0..n).map(|i| (Reverse(last_touch(i) + PERIOD), i as u32, 0)));
    let mut generation = vec![0u32; n];
    let mut now = t0;
    let mut period = |heap: &mut BinaryHeap<HeapEntry>, now: &mut u32| {
        let mut events = 0;
        for _ in 0..PERIOD {
            let t = *now;
            for i in touched(t) {
                let g = generation[i].wrapping_add(1);
                generation[i] = g;
                heap.push((Reverse(t + PERIOD), i as u32, g));
            }
            while let Some(&(Reverse(due), i, g)) = heap.peek() {
                if due > t {
                    break;
                }
                heap.pop();
                if g == generation[i as usize] {
                    events += 1;
                }
            }
            *now += 1;
        }
        assert_eq!(events, 0, "no connection is idle");
    };
    period(&mut heap, &mut now);
    g.bench_function(BenchmarkId::new(name("binary_heap"), n), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                period(&mut heap, &mut now);
            }
            start.elapsed()
        });
    });
    drop(heap);

    let _rt = rt.enter();
    let mut dq: DelayQueue<u32> = DelayQueue::with_capacity(n);
    let keys: Vec<delay_queue::Key> = (0..n).map(|i| dq.insert(i as u32, ticks(PERIOD))).collect();
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function(BenchmarkId::new(name("delay_queue"), n), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for t in 0..PERIOD {
                    for i in touched(t) {
                        dq.reset(&keys[i], ticks(PERIOD));
                    }
                    assert!(dq.poll_expired(&mut cx).is_pending());
                }
            }
            start.elapsed()
        });
    });
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    touch(c, &rt);
    insert(c, &rt);
    cancel(c, &rt);
    cancel_recent(c, &rt);
    churn(c, &rt);
    poll_nothing_due(c, &rt);
    fire_reinsert(c, &rt);
    idle_workload(c, &rt);
}

criterion_group!(wheel, benches);
criterion_main!(wheel);
