//! When the kernel kept Redis's main thread off its CPU while it wanted to run.
//!
//! Under `SCHED_FIFO` no normal process preempts Redis, but the kernel still reserves a
//! share of each CPU for normal tasks (`sched_rt_runtime_us` of `sched_rt_period_us`,
//! 950 ms of every second by default, served by the fair-server since Linux 6.12): a Redis
//! kept busy on its core for 950 ms is paused for up to 50 ms while the starved normal
//! tasks there run. A script call under way is stretched by the pause, and `SLOWLOG` counts
//! it into the call. The thread's `run_delay` (`/proc/<pid>/task/<pid>/schedstat`, time
//! spent runnable but not running) grows by exactly such a pause; sampled every
//! [`SAMPLE`], it tells a pause from a call's own work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often `run_delay` is read.
const SAMPLE: Duration = Duration::from_millis(2);
/// Pauses shorter than this (ms) are not kept.
const KEPT_MS: f64 = 1.0;

/// One stretch of samples in which the thread waited for its CPU.
#[derive(Clone, Copy, Debug)]
pub struct Pause {
    /// When the stretch began, in Unix milliseconds.
    pub at_ms: u64,
    /// Time runnable but not running within it, in milliseconds.
    pub waited_ms: f64,
}

/// Samples a thread's `run_delay` until stopped.
pub struct OffCpu {
    stop: Arc<AtomicBool>,
    pauses: Arc<Mutex<Vec<Pause>>>,
    sampler: Option<JoinHandle<()>>,
}

impl OffCpu {
    /// Starts sampling the main thread of process `pid`; `None` where the kernel does not
    /// keep scheduler statistics.
    pub fn start(pid: u32) -> Option<Self> {
        let path = format!("/proc/{pid}/task/{pid}/schedstat");
        run_delay_ns(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let pauses = Arc::new(Mutex::new(Vec::new()));
        let sampler = {
            let (stop, pauses) = (stop.clone(), pauses.clone());
            std::thread::spawn(move || sample(&path, &stop, &pauses))
        };
        Some(Self {
            stop,
            pauses,
            sampler: Some(sampler),
        })
    }

    /// Stops sampling; the pauses over [`KEPT_MS`], oldest first.
    pub fn finish(mut self) -> Vec<Pause> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let pauses = self.pauses.lock().map(|p| p.clone()).unwrap_or_default();
        pauses
    }
}

impl Drop for OffCpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sample(path: &str, stop: &AtomicBool, pauses: &Mutex<Vec<Pause>>) {
    let Some(mut last) = run_delay_ns(path) else {
        return;
    };
    // The stretch under way: its start and the delay added so far.
    let mut current: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(SAMPLE);
        let Some(delay) = run_delay_ns(path) else {
            return;
        };
        let added = delay.saturating_sub(last);
        last = delay;
        match (&mut current, added) {
            (Some((_, waited)), added) if added > 0 => *waited += added,
            (None, added) if added > 0 => current = Some((now_ms(), added)),
            (_, _) => {
                if let Some((at_ms, waited)) = current.take() {
                    let waited_ms = waited as f64 / 1e6;
                    if waited_ms >= KEPT_MS {
                        if let Ok(mut p) = pauses.lock() {
                            p.push(Pause { at_ms, waited_ms });
                        }
                    }
                }
            }
        }
    }
}

/// The second field of a `schedstat` file: nanoseconds runnable but not running.
fn run_delay_ns(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The kernel's share of each CPU for real-time tasks, as `runtime of period` (µs).
pub fn rt_share() -> String {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    format!(
        "{} µs of every {} µs",
        read("sched_rt_runtime_us"),
        read("sched_rt_period_us")
    )
}

/// The time `pauses` took from a call that Redis logged at `at` (Unix seconds, when the
/// call ended) and that ran `micros`: the pauses that began while it could have run.
pub fn within_call(pauses: &[Pause], at: i64, micros: u64) -> f64 {
    let end_ms = (at.max(0) as u64 + 1) * 1000;
    let start_ms = (at.max(0) as u64 * 1000).saturating_sub(micros / 1000 + 1);
    pauses
        .iter()
        .filter(|p| p.at_ms + 2 >= start_ms && p.at_ms <= end_ms)
        .map(|p| p.waited_ms)
        .fold(0.0, |sum, w| sum + w)
}
