//! The overhead budget (`agent.max_overhead_percent`): the agent measures what its own kernel
//! programs cost, and when that is more than the budget it samples the run-queue signal, the one
//! on the scheduler's hottest path, timing only 1 in 2^k waits and adapting k.
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
//! **Control**: above the budget, k grows by as many steps as the excess needs (each step halves
//! the sampled part of the cost); below half the budget it shrinks by one (one step at most
//! doubles the cost, so it stays under the budget: hysteresis, no oscillation on a steady load).

use std::{
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use observer_common::runqueue::{MAX_SAMPLE_SHIFT, SAMPLING_MAP};

use super::metrics::{Data, GaugePoint, Metric, keys, names};
use crate::{ebpf::Loaded, signals::Signal};

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
    #[error("setting the run-queue sample shift in map {SAMPLING_MAP}: {0}")]
    Map(#[source] aya::maps::MapError),
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

    /// Takes one measured cost (percent of all CPUs' time, at the current shift) and returns
    /// the shift to use from now on.
    pub fn update(&mut self, cost_percent: f64) -> u32 {
        let Some(budget) = self.budget else {
            return self.shift;
        };
        if cost_percent > budget {
            // Each step halves the sampled part; the rest of the cost does not shrink, so this
            // is the fewest steps that can be enough, and the next measurement corrects it.
            let steps = (cost_percent / budget).log2().ceil().clamp(1.0, 64.0) as u32;
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
    runqueue: bool,
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
            runqueue: loaded.running().any(|s| s == Signal::Runqueue),
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
                self.adapt(loaded, cost.total_percent())?;
                self.last = Some(cost);
            }
        }
        Ok(())
    }

    fn adapt(&mut self, loaded: &mut Loaded, cost: f64) -> Result<(), BudgetError> {
        let old = self.controller.shift();
        // Judged before adapting: at the highest shift already and still over.
        let exhausted = self.controller.exhausted(cost) || !self.runqueue;
        let new = if self.runqueue {
            self.controller.update(cost)
        } else {
            old
        };
        if new != old {
            let map = loaded.ebpf.map_mut(SAMPLING_MAP).ok_or_else(|| {
                BudgetError::Map(aya::maps::MapError::InvalidName {
                    name: SAMPLING_MAP.into(),
                })
            })?;
            let mut array: Array<&mut MapData, u32> =
                Array::try_from(map).map_err(BudgetError::Map)?;
            array.set(0, &new, 0).map_err(BudgetError::Map)?;
            tracing::info!(
                "overhead budget: the programs cost {cost:.4}% of CPU time; now timing 1 in {} \
                 run-queue waits (was 1 in {})",
                1u64 << new,
                1u64 << old
            );
        }
        if exhausted && self.controller.over(cost) && !self.warned_exhausted {
            tracing::warn!(
                "overhead budget exceeded: the programs cost {cost:.4}% of CPU time, and only \
                 the run-queue signal samples (now 1 in {} waits; see \
                 observer.overhead.cpu_utilization by signal)",
                1u64 << new
            );
            self.warned_exhausted = true;
        }
        Ok(())
    }

    /// The sampling rate (when the run-queue signal runs) and the last measured cost.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        if self.runqueue {
            out.push(Metric {
                name: names::RUNQUEUE_SAMPLING,
                description: "Run-queue waits per timed wait: 1 times every wait; N > 1 (a power of two) when the overhead budget samples, so observer.runqueue.latency counts about 1/N of the waits (its percentiles are unaffected).",
                unit: "1",
                data: Data::Gauge(vec![GaugePoint {
                    attributes: Vec::new(),
                    value: (1u64 << self.controller.shift()) as f64,
                }]),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_budget_it_never_samples() {
        let mut c = Controller::new(None);
        assert_eq!(c.update(99.0), 0);
        assert!(!c.exhausted(99.0));
    }

    #[test]
    fn over_budget_it_jumps_by_the_halvings_the_excess_needs() {
        let mut c = Controller::new(Some(0.1));
        // 3x over: two halvings (4x) can be enough, one cannot.
        assert_eq!(c.update(0.3), 2);
        // Just over: one step.
        assert_eq!(c.update(0.100_001), 3);
        // Far over: capped.
        assert_eq!(c.update(1e6), MAX_SAMPLE_SHIFT);
        assert!(c.exhausted(1e6));
        assert!(!c.exhausted(0.05));
    }

    #[test]
    fn it_backs_off_one_step_only_below_half_the_budget() {
        let mut c = Controller::new(Some(1.0));
        assert_eq!(c.update(5.0), 3);
        // Between half the budget and the budget: steady (hysteresis).
        for cost in [1.0, 0.9, 0.5] {
            assert_eq!(c.update(cost), 3, "cost {cost}");
        }
        // Below half: one step at a time, down to every wait timed.
        assert_eq!(c.update(0.49), 2);
        assert_eq!(c.update(0.1), 1);
        assert_eq!(c.update(0.1), 0);
        assert_eq!(c.update(0.0), 0);
    }

    #[test]
    fn a_steady_load_settles_instead_of_oscillating() {
        // A cost with a fixed part and a part that halves with each step of the shift.
        let cost = |shift: u32| 0.2 + 3.2 / f64::from(1u32 << shift);
        let mut c = Controller::new(Some(1.0));
        let shifts: Vec<u32> = (0..8).map(|_| c.update(cost(c.shift()))).collect();
        // 3.4 -> 2 steps (1.0, at budget, kept); never back down, since 1.0 is not below 0.5.
        assert_eq!(shifts, [2, 2, 2, 2, 2, 2, 2, 2]);
        assert!(cost(2) <= 1.0);
    }

    #[test]
    fn percent_is_of_all_cpus_time() {
        // 10 ms of run time in 1 s on 2 CPUs: 0.5%.
        let p = percent_of_cpus(10_000_000, Duration::from_secs(1), 2);
        assert!((p - 0.5).abs() < 1e-12, "{p}");
        assert_eq!(percent_of_cpus(5, Duration::ZERO, 2), 0.0);
    }
}
