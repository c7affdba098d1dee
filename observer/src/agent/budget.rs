//! The overhead budget (`agent.max_overhead_percent`): the agent measures what its own kernel
//! programs cost, and when that is more than the budget it samples the signals on the hottest
//! paths ([`SAMPLED`]: run-queue waits, on the scheduler's, and futex waits, on the system
//! call path), timing only 1 in 2^k waits of each and adapting k (one k for both).
//!
//! **Cost** is the kernel's own run time of every attached program (`run_time_ns` in its
//! program info), summed over a window, as a share of all online CPUs' time in that window:
//! `sum(run_time_ns delta) / (window_ns * online CPUs)`. The kernel only counts run time while
//! statistics are on, so the agent turns them on with `BPF_ENABLE_STATS` for [`WINDOW_MAX`] (or
//! half an interval, if shorter) every [`PERIOD_MIN`] (or every interval, if longer): the
//! statistics stay on only while the returned fd is open, so nothing is left switched on if the
//! agent dies, and `kernel.bpf_stats_enabled` is never touched. While they are on every BPF
//! program on the host pays for being timed (tens of ns per run), which is why they are sampled
//! too. The figure leaves out what the kernel spends reaching a program (the tracepoint's BPF
//! dispatch), so it is a lower bound of the true cost.
//!
//! Without a budget nothing is measured: turning the statistics on makes every BPF program on
//! the host pay for being timed, and needs CAP_SYS_ADMIN, which the agent otherwise drops after
//! attaching (`crate::caps`).
//!
//! **Control**: above the budget, k grows by as many steps as the sampled signals' cost needs to
//! fit in what the other signals leave of the budget (each step halves the sampled part of the
//! cost); below half the budget it shrinks by one (one step at most doubles the cost, so it stays
//! under the budget: hysteresis, no oscillation on a steady load).
//!
//! **What sampling cannot cut**: the futex programs run on every system call and return at once
//! for anything but a futex call, sampled or not; an unsampled sched_switch still looks up both
//! tasks. That floor, and the signals that do not sample, stay; when they alone are over the
//! budget the agent says so in its log.

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use observer_common::{lock::futex, runqueue, runqueue::MAX_SAMPLE_SHIFT};

use super::metrics::{Data, GaugePoint, Metric, keys, names};
use crate::{ebpf::Loaded, signals::Signal};

/// The signals the budget samples, with the map of each one's sample shift.
pub const SAMPLED: [(Signal, &str); 2] = [
    (Signal::Runqueue, runqueue::SAMPLING_MAP),
    (Signal::Futex, futex::SAMPLING_MAP),
];

/// The sampled signals among `running`, in [`SAMPLED`] order.
pub fn sampled_signals(running: impl IntoIterator<Item = Signal>) -> Vec<Signal> {
    let running: Vec<Signal> = running.into_iter().collect();
    SAMPLED
        .iter()
        .map(|&(s, _)| s)
        .filter(|s| running.contains(s))
        .collect()
}

/// What the log calls a sampled signal's events.
fn waits(signal: Signal) -> &'static str {
    match signal {
        Signal::Futex => "futex waits",
        _ => "run-queue waits",
    }
}

/// Longest measurement window.
pub const WINDOW_MAX: Duration = Duration::from_secs(1);
/// Shortest time between the starts of two measurements.
pub const PERIOD_MIN: Duration = Duration::from_secs(30);

/// Why the budget could not act.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "turning on BPF run-time statistics (BPF_ENABLE_STATS, Linux 5.8+) to measure the \
         programs' cost: {0}"
    )]
    Stats(#[source] aya::sys::SyscallError),
    #[error("reading program {program}'s run time: {source}")]
    Info {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("setting the sample shift in map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// Decides the sample shift k from measured costs (pure, so it is unit tested).
#[derive(Clone, Debug)]
pub struct Controller {
    /// The budget in percent of all CPUs' time; `None`: never sample.
    budget: Option<f64>,
    shift: u32,
}

impl Controller {
    pub fn new(budget_percent: Option<f64>) -> Self {
        Self {
            budget: budget_percent,
            shift: 0,
        }
    }

    /// The current sample shift: 1 in 2^shift waits is timed.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// Takes one measured cost (percent of all CPUs' time, at the current shift), split into
    /// the sampled signals' part and the other signals' part, and returns the shift to use from
    /// now on.
    pub fn update(&mut self, sampled_percent: f64, other_percent: f64) -> u32 {
        let Some(budget) = self.budget else {
            return self.shift;
        };
        let cost_percent = sampled_percent + other_percent;
        if cost_percent > budget {
            // Each step halves the sampled part, which must fit in what the others leave; part
            // of it does not shrink either (the programs still run for unsampled events), so
            // this is the fewest steps that can be enough, and the next measurement corrects it.
            // With nothing left by the others, sampling as much as it can is all it can do.
            let room = budget - other_percent;
            let steps = if room > 0.0 {
                (sampled_percent / room).log2().ceil().clamp(1.0, 64.0) as u32
            } else {
                MAX_SAMPLE_SHIFT
            };
            self.shift = self.shift.saturating_add(steps).min(MAX_SAMPLE_SHIFT);
        } else if cost_percent < budget / 2.0 {
            self.shift = self.shift.saturating_sub(1);
        }
        self.shift
    }

    /// Whether `cost_percent` is over the budget.
    pub fn over(&self, cost_percent: f64) -> bool {
        self.budget.is_some_and(|b| cost_percent > b)
    }

    /// Over budget even at the highest shift: sampling cannot do more.
    pub fn exhausted(&self, cost_percent: f64) -> bool {
        self.over(cost_percent) && self.shift == MAX_SAMPLE_SHIFT
    }
}

/// One measurement window's cost, per signal.
#[derive(Clone, Debug)]
pub struct Cost {
    pub window: Duration,
    /// Percent of all online CPUs' time, per running signal.
    pub by_signal: Vec<(Signal, f64)>,
}

impl Cost {
    pub fn total_percent(&self) -> f64 {
        self.by_signal.iter().map(|(_, p)| p).sum()
    }

    /// The part of [`Cost::total_percent`] that the signals in `sampled` cost.
    pub fn sampled_percent(&self, sampled: &[Signal]) -> f64 {
        self.by_signal
            .iter()
            .filter(|(s, _)| sampled.contains(s))
            .map(|(_, p)| p)
            .sum()
    }
}

/// Cumulative (run time in ns, runs) of each attached program, by signal.
fn program_times(loaded: &Loaded) -> Result<Vec<(Signal, u64, u64)>, BudgetError> {
    let mut out = Vec::new();
    for signal in loaded.running() {
        for &(program, _) in signal.programs() {
            let Some(prog) = loaded.ebpf.program(program) else {
                continue;
            };
            let info = prog
                .info()
                .map_err(|source| BudgetError::Info { program, source })?;
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            out.push((signal, ns, info.run_count()));
        }
    }
    Ok(out)
}

/// Percent of `cpus` CPUs' time that `ns` of run time is over `window`.
pub fn percent_of_cpus(ns: u64, window: Duration, cpus: usize) -> f64 {
    let capacity = window.as_secs_f64() * 1e9 * cpus.max(1) as f64;
    if capacity <= 0.0 {
        return 0.0;
    }
    100.0 * ns as f64 / capacity
}

enum Window {
    Closed {
        next: Instant,
    },
    Open {
        _stats: OwnedFd,
        began: Instant,
        before: Vec<(Signal, u64, u64)>,
    },
}

/// Measures the programs' cost in windows and applies the [`Controller`]'s shift.
pub struct Budget {
    controller: Controller,
    window: Duration,
    period: Duration,
    cpus: usize,
    state: Window,
    last: Option<Cost>,
    /// The running signals that sample ([`SAMPLED`]).
    sampled: Vec<Signal>,
    /// A failure already logged, so a kernel without BPF_ENABLE_STATS logs once.
    warned: bool,
    /// The budget found unreachable already logged.
    warned_exhausted: bool,
}

impl Budget {
    /// A budget for the agent collecting every `interval`; the first measurement starts now.
    pub fn new(loaded: &Loaded, interval: Duration, max_percent: Option<f64>) -> Self {
        let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
        Self {
            controller: Controller::new(max_percent),
            window: WINDOW_MAX.min(interval / 2),
            period: PERIOD_MIN.max(interval),
            cpus,
            state: Window::Closed {
                next: Instant::now(),
            },
            last: None,
            sampled: sampled_signals(loaded.running()),
            warned: false,
            warned_exhausted: false,
        }
    }

    /// When [`Budget::poll`] next has something to do (without a budget: not for a day).
    pub fn deadline(&self) -> Instant {
        if self.controller.budget.is_none() {
            return Instant::now() + Duration::from_secs(86_400);
        }
        match &self.state {
            Window::Closed { next } => *next,
            Window::Open { began, .. } => *began + self.window,
        }
    }

    /// Opens or closes a window when it is time, and after closing one adapts the shift.
    pub fn poll(&mut self, loaded: &mut Loaded) {
        if let Err(e) = self.step(loaded) {
            if !self.warned {
                tracing::warn!("overhead budget: {e}");
                self.warned = true;
            }
            self.state = Window::Closed {
                next: Instant::now() + self.period,
            };
        }
    }

    fn step(&mut self, loaded: &mut Loaded) -> Result<(), BudgetError> {
        let now = Instant::now();
        if self.controller.budget.is_none() || now < self.deadline() {
            return Ok(());
        }
        match &self.state {
            Window::Closed { .. } => {
                let stats =
                    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(BudgetError::Stats)?;
                let before = program_times(loaded)?;
                self.state = Window::Open {
                    _stats: stats,
                    began: Instant::now(),
                    before,
                };
            }
            Window::Open { began, before, .. } => {
                let after = program_times(loaded)?;
                let window = began.elapsed();
                let mut by_signal: Vec<(Signal, f64)> = Vec::new();
                for ((signal, ns, _), (_, ns0, _)) in after.iter().zip(before) {
                    let p = percent_of_cpus(ns.saturating_sub(*ns0), window, self.cpus);
                    match by_signal.iter_mut().find(|(s, _)| s == signal) {
                        Some((_, total)) => *total += p,
                        None => by_signal.push((*signal, p)),
                    }
                }
                // Closing the fd turns the statistics off (unless someone else holds them on).
                self.state = Window::Closed {
                    next: now - window + self.period,
                };
                let cost = Cost { window, by_signal };
                self.adapt(loaded, &cost)?;
                self.last = Some(cost);
            }
        }
        Ok(())
    }

    fn adapt(&mut self, loaded: &mut Loaded, cost: &Cost) -> Result<(), BudgetError> {
        let total = cost.total_percent();
        let old = self.controller.shift();
        // Judged before adapting: at the highest shift already and still over.
        let exhausted = self.controller.exhausted(total) || self.sampled.is_empty();
        let new = if self.sampled.is_empty() {
            old
        } else {
            let sampled = cost.sampled_percent(&self.sampled);
            self.controller.update(sampled, total - sampled)
        };
        if new != old {
            for &(_, map) in SAMPLED.iter().filter(|(s, _)| self.sampled.contains(s)) {
                set_shift(loaded, map, new)?;
            }
            tracing::info!(
                "overhead budget: the programs cost {total:.4}% of CPU time; now timing 1 in {} \
                 {} (was 1 in {})",
                1u64 << new,
                self.what(),
                1u64 << old
            );
        }
        if exhausted && self.controller.over(total) && !self.warned_exhausted {
            let sampling = if self.sampled.is_empty() {
                "no running signal samples (only runqueue and futex can)".to_owned()
            } else {
                format!(
                    "sampling is at its most, 1 in {} {}",
                    1u64 << new,
                    self.what()
                )
            };
            tracing::warn!(
                "overhead budget exceeded: the programs cost {total:.4}% of CPU time, and \
                 {sampling}; what is left is the cost of the signals that do not sample and of \
                 the programs' runs for unsampled events (see observer.overhead.cpu.utilization \
                 by signal)"
            );
            self.warned_exhausted = true;
        }
        Ok(())
    }

    /// "run-queue waits and futex waits", as far as those signals run.
    fn what(&self) -> String {
        self.sampled
            .iter()
            .map(|&s| waits(s))
            .collect::<Vec<_>>()
            .join(" and ")
    }

    /// The sampling rate of each sampled signal, and the last measured cost.
    pub fn metrics(&self) -> Vec<Metric> {
        let rate = 1u64 << self.controller.shift();
        let mut out: Vec<Metric> = self
            .sampled
            .iter()
            .map(|&signal| {
                let (name, description) = match signal {
                    Signal::Futex => (
                        names::FUTEX_SAMPLING,
                        "Futex waits per timed wait: 1 times every wait; N > 1 (a power of two) when the overhead budget samples, so observer.futex.wait.duration counts about 1/N of the waits (percentiles are unaffected).",
                    ),
                    _ => (
                        names::RUNQUEUE_SAMPLING,
                        "Run-queue waits per timed wait: 1 times every wait; N > 1 (a power of two) when the overhead budget samples, so observer.runqueue.wait.duration counts about 1/N of the waits (its percentiles are unaffected).",
                    ),
                };
                Metric {
                    name,
                    description,
                    unit: "1",
                    data: Data::Gauge(vec![GaugePoint {
                        attributes: Vec::new(),
                        value: rate as f64,
                    }]),
                }
            })
            .collect();
        if let Some(cost) = &self.last {
            out.push(Metric {
                name: names::OVERHEAD_CPU,
                description: "Share of all online CPUs' time spent running observer's kernel programs (kernel run time, BPF_ENABLE_STATS), by signal, over the last measurement window.",
                unit: "1",
                data: Data::Gauge(
                    cost.by_signal
                        .iter()
                        .map(|(s, p)| GaugePoint {
                            attributes: vec![(keys::SIGNAL, s.name().into())],
                            value: p / 100.0,
                        })
                        .collect(),
                ),
            });
        }
        out
    }
}

/// Writes the sample shift into a signal's one-slot array.
fn set_shift(loaded: &mut Loaded, map: &'static str, shift: u32) -> Result<(), BudgetError> {
    let err = |source| BudgetError::Map { map, source };
    let data = loaded
        .ebpf
        .map_mut(map)
        .ok_or_else(|| err(aya::maps::MapError::InvalidName { name: map.into() }))?;
    let mut array: Array<&mut MapData, u32> = Array::try_from(data).map_err(err)?;
    array.set(0, &shift, 0).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_budget_it_never_samples() {
        let mut c = Controller::new(None);
        assert_eq!(c.update(99.0, 0.0), 0);
        assert!(!c.exhausted(99.0));
    }

    #[test]
    fn over_budget_it_jumps_by_the_halvings_the_excess_needs() {
        let mut c = Controller::new(Some(0.1));
        // 3x over: two halvings (4x) can be enough, one cannot.
        assert_eq!(c.update(0.3, 0.0), 2);
        // Just over: one step.
        assert_eq!(c.update(0.100_001, 0.0), 3);
        // Far over: capped.
        assert_eq!(c.update(1e6, 0.0), MAX_SAMPLE_SHIFT);
        assert!(c.exhausted(1e6));
        assert!(!c.exhausted(0.05));
    }

    #[test]
    fn it_backs_off_one_step_only_below_half_the_budget() {
        let mut c = Controller::new(Some(1.0));
        assert_eq!(c.update(5.0, 0.0), 3);
        // Between half the budget and the budget: steady (hysteresis).
        for cost in [1.0, 0.9, 0.5] {
            assert_eq!(c.update(cost, 0.0), 3, "cost {cost}");
        }
        // Below half: one step at a time, down to every wait timed.
        assert_eq!(c.update(0.49, 0.0), 2);
        assert_eq!(c.update(0.1, 0.0), 1);
        assert_eq!(c.update(0.1, 0.0), 0);
        assert_eq!(c.update(0.0, 0.0), 0);
    }

    #[test]
    fn a_steady_load_settles_instead_of_oscillating() {
        // A cost with a fixed part and a part that halves with each step of the shift.
        let cost = |shift: u32| 0.2 + 3.2 / f64::from(1u32 << shift);
        let mut c = Controller::new(Some(1.0));
        let shifts: Vec<u32> = (0..8).map(|_| c.update(cost(c.shift()), 0.0)).collect();
        // 3.4 -> 2 steps (1.0, at budget, kept); never back down, since 1.0 is not below 0.5.
        assert_eq!(shifts, [2, 2, 2, 2, 2, 2, 2, 2]);
        assert!(cost(2) <= 1.0);
    }

    #[test]
    fn the_sampled_part_must_fit_in_what_the_others_leave() {
        // 0.3 in all, 0.05 of it from signals that do not sample: the sampled 0.25 must fit in
        // 0.05 (5x: three halvings), where the total alone (3x) would suggest two.
        let mut c = Controller::new(Some(0.1));
        assert_eq!(c.update(0.25, 0.05), 3);
        // The others alone over the budget: sample as much as possible, and say it is not enough.
        let mut c = Controller::new(Some(0.1));
        assert_eq!(c.update(0.01, 0.2), MAX_SAMPLE_SHIFT);
        assert!(c.exhausted(0.21));
    }

    #[test]
    fn a_futex_heavy_load_settles_above_the_floor_sampling_cannot_cut() {
        // The futex programs run on every system call: 0.3 of their cost is the early return of
        // the calls that are not futex waits, which no sampling changes; 1.6 is the waits.
        let cost = |shift: u32| 0.3 + 1.6 / f64::from(1u32 << shift);
        let mut c = Controller::new(Some(0.5));
        let shifts: Vec<u32> = (0..6).map(|_| c.update(cost(c.shift()), 0.0)).collect();
        // 1.9 -> two steps (0.7, over) -> one more (0.5, at budget, kept).
        assert_eq!(shifts, [2, 3, 3, 3, 3, 3]);
        assert!(!c.over(cost(3)));
        // A budget under the floor: the shift goes to its end (one step per measurement once
        // the excess is small) and the controller says so.
        let mut c = Controller::new(Some(0.25));
        for _ in 0..10 {
            c.update(cost(c.shift()), 0.0);
        }
        assert_eq!(c.shift(), MAX_SAMPLE_SHIFT);
        assert!(c.exhausted(cost(MAX_SAMPLE_SHIFT)));
    }

    #[test]
    fn only_runqueue_and_futex_sample() {
        assert_eq!(
            sampled_signals(Signal::ALL),
            [Signal::Runqueue, Signal::Futex]
        );
        assert_eq!(
            sampled_signals([Signal::Futex, Signal::Lock, Signal::BlockIo]),
            [Signal::Futex]
        );
        assert!(sampled_signals([Signal::Tcp, Signal::Lock]).is_empty());
        let cost = Cost {
            window: Duration::from_secs(1),
            by_signal: vec![
                (Signal::Runqueue, 0.5),
                (Signal::BlockIo, 0.25),
                (Signal::Futex, 0.125),
            ],
        };
        assert_eq!(
            cost.sampled_percent(&[Signal::Runqueue, Signal::Futex]),
            0.625
        );
        assert_eq!(cost.total_percent(), 0.875);
    }

    #[test]
    fn percent_is_of_all_cpus_time() {
        // 10 ms of run time in 1 s on 2 CPUs: 0.5%.
        let p = percent_of_cpus(10_000_000, Duration::from_secs(1), 2);
        assert!((p - 0.5).abs() < 1e-12, "{p}");
        assert_eq!(percent_of_cpus(5, Duration::ZERO, 2), 0.0);
    }
}
