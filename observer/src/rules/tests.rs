//! The rule engine against real settings: a sysctl of a network namespace each test creates
//! (net sysctls are per namespace, so the host is never touched), fed with snapshots of TCP
//! retransmits whose counts the test chooses, on a clock the test moves.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use observer_tests::netns::NetNs;

use super::{
    actions::Knob,
    engine::Engine,
    journal::{self, Outcome, Record},
    spec::Tuning,
    state::State,
};
use crate::{
    agent::metrics::{Data, Metric, Snapshot, SumPoint, names},
    config::{Config, Overrides},
};

const KEY: &str = "net.core.somaxconn";

fn somaxconn() -> String {
    Knob::Sysctl { key: KEY.into() }.read().unwrap()
}

fn set_somaxconn(v: &str) {
    Knob::Sysctl { key: KEY.into() }.write(v).unwrap();
}

/// A snapshot in which `total` retransmits have happened since the start.
fn retransmits(total: u64) -> Snapshot {
    Snapshot {
        time: SystemTime::now(),
        metrics: vec![Metric {
            name: names::TCP_RETRANSMITS,
            description: "",
            unit: "{retransmit}",
            data: Data::Sum(vec![SumPoint {
                attributes: Vec::new(),
                start: SystemTime::UNIX_EPOCH,
                value: total,
            }]),
        }],
    }
}

/// A scratch directory for the journal and the state, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(observer_tests::unique_name("observer-rules"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The tuning of a config with `rules` (TOML) using this directory.
    fn tuning(&self, rules: &str) -> Tuning {
        let file = self.0.join("observer.toml");
        let text = format!(
            "[tuning]\njournal = \"{}/actions.jsonl\"\nstate = \"{}/managed.json\"\n{rules}",
            self.0.display(),
            self.0.display()
        );
        std::fs::write(&file, text).unwrap();
        Config::load_with_rules(Some(&file), |_| None, &Overrides::default())
            .unwrap()
            .1
    }

    fn journal(&self) -> Vec<Record> {
        journal::read(&self.0.join("actions.jsonl"))
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect()
    }

    fn state(&self) -> State {
        State::open(&self.0.join("managed.json")).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A rule on the host's retransmit rate: above 5/s fires, below 1/s clears; 1 s apart.
fn rule(mode: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"retransmits\"\nsignal = \"tcp\"\nstatistic = \"rate\"\n\
         above = 5\nclear_below = 1\nwindow = \"2s\"\nmode = \"{mode}\"\n\
         min_interval = \"1s\"\n{extra}\
         actions = [{{ type = \"sysctl\", key = \"{KEY}\", value = \"8192\" }}, {{ type = \"log\" }}]\n"
    )
}

/// Feeds the engine one snapshot per second with `per_second[i]` retransmits in second i.
struct Feed {
    t0: Instant,
    seconds: u64,
    total: u64,
}

impl Feed {
    fn new(engine: &mut Engine) -> Self {
        let t0 = Instant::now();
        assert!(engine.evaluate(&retransmits(0), t0).is_empty());
        Self {
            t0,
            seconds: 0,
            total: 0,
        }
    }

    fn tick(&mut self, engine: &mut Engine, retransmits_this_second: u64) -> Vec<Record> {
        self.seconds += 1;
        self.total += retransmits_this_second;
        engine.evaluate(
            &retransmits(self.total),
            self.t0 + Duration::from_secs(self.seconds),
        )
    }
}

fn outcomes(records: &[Record]) -> Vec<Outcome> {
    records.iter().filter_map(|r| r.outcome).collect()
}

fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let ns = NetNs::create().expect("network namespaces need root and iproute2");
    ns.run(f).unwrap()
}

#[test]
fn dry_run_records_the_decision_and_changes_nothing() {
    in_netns(|| {
        let scratch = Scratch::new();
        let before = somaxconn();
        let mut engine = Engine::new(scratch.tuning(&rule("dry-run", ""))).unwrap();
        let mut feed = Feed::new(&mut engine);
        assert!(feed.tick(&mut engine, 0).is_empty());
        let fired = feed.tick(&mut engine, 20);
        assert_eq!(outcomes(&fired), [Outcome::DryRun, Outcome::Logged]);
        let r = &fired[0];
        assert_eq!(r.mode, "dry-run");
        assert_eq!(r.before.as_deref(), Some(before.as_str()));
        assert_eq!(r.after.as_deref(), Some("8192"));
        assert_eq!(r.observed, Some(10.0), "20 retransmits over the 2 s window");
        assert_eq!(r.threshold, Some(5.0));
        assert_eq!(r.condition, "tcp rate > 5/s");
        assert_eq!(somaxconn(), before, "dry-run changed the setting");
        assert!(scratch.state().managed().is_empty());
        // Still breached: no second decision while firing.
        assert!(feed.tick(&mut engine, 20).is_empty());
        assert_eq!(scratch.journal(), fired);
    });
}

#[test]
fn enforce_changes_then_reverts_when_the_rule_clears_and_rate_limits_hold() {
    in_netns(|| {
        let scratch = Scratch::new();
        let original = somaxconn();
        let mut engine = Engine::new(scratch.tuning(&rule(
            "enforce",
            "for = \"2s\"\nclear_for = \"2s\"\nmax_changes_per_hour = 1\n",
        )))
        .unwrap();
        let mut feed = Feed::new(&mut engine);
        // The breach must hold for 2 s: seen at 1 s, fires at 3 s.
        assert!(feed.tick(&mut engine, 20).is_empty());
        assert!(feed.tick(&mut engine, 20).is_empty());
        let fired = feed.tick(&mut engine, 20);
        assert_eq!(outcomes(&fired), [Outcome::Applied, Outcome::Logged]);
        assert_eq!(fired[0].before.as_deref(), Some(original.as_str()));
        assert_eq!(fired[0].after.as_deref(), Some("8192"));
        assert_eq!(somaxconn(), "8192");
        let managed = scratch.state();
        assert_eq!(managed.managed().len(), 1);
        assert_eq!(managed.managed()[0].original, original);
        // Quiet: the window empties, then the clear condition must hold 2 s.
        let mut cleared = Vec::new();
        for _ in 0..5 {
            cleared.extend(feed.tick(&mut engine, 0));
        }
        assert_eq!(outcomes(&cleared), [Outcome::Cleared, Outcome::RolledBack]);
        assert_eq!(cleared[1].after.as_deref(), Some(original.as_str()));
        assert_eq!(somaxconn(), original);
        assert!(scratch.state().managed().is_empty());
        // A second breach: max_changes_per_hour = 1 holds it back, recorded once.
        let mut again = Vec::new();
        for _ in 0..5 {
            again.extend(feed.tick(&mut engine, 20));
        }
        assert_eq!(outcomes(&again), [Outcome::RateLimited]);
        assert!(
            again[0].message.contains("max_changes_per_hour is 1"),
            "{}",
            again[0].message
        );
        assert_eq!(somaxconn(), original);
    });
}

#[test]
fn an_outside_change_is_noticed_and_not_undone() {
    in_netns(|| {
        let scratch = Scratch::new();
        let original = somaxconn();
        let mut engine = Engine::new(scratch.tuning(&rule("enforce", ""))).unwrap();
        let mut feed = Feed::new(&mut engine);
        assert_eq!(outcomes(&feed.tick(&mut engine, 20))[0], Outcome::Applied);
        set_somaxconn("1000");
        let seen = feed.tick(&mut engine, 20);
        assert_eq!(outcomes(&seen), [Outcome::OutsideChange]);
        assert_eq!(seen[0].before.as_deref(), Some("8192"));
        assert_eq!(seen[0].after.as_deref(), Some("1000"));
        assert!(scratch.state().managed().is_empty());
        // Clearing and exiting leave the other party's value alone.
        for _ in 0..4 {
            feed.tick(&mut engine, 0);
        }
        assert!(engine.shutdown(Duration::from_secs(1)).is_empty());
        assert_eq!(somaxconn(), "1000");
        set_somaxconn(&original);
    });
}

#[test]
fn exit_reverts_and_a_killed_run_is_restored_at_the_next_start() {
    in_netns(|| {
        let scratch = Scratch::new();
        let original = somaxconn();
        let config = rule("enforce", "");
        {
            let mut engine = Engine::new(scratch.tuning(&config)).unwrap();
            let mut feed = Feed::new(&mut engine);
            feed.tick(&mut engine, 20);
            assert_eq!(somaxconn(), "8192");
            let exit = engine.shutdown(Duration::from_secs(1));
            assert_eq!(outcomes(&exit), [Outcome::RolledBack]);
            assert_eq!(exit[0].event, "exit");
            assert_eq!(somaxconn(), original);
        }
        {
            // Dropped without shutdown: as if killed with SIGKILL after the change.
            let mut engine = Engine::new(scratch.tuning(&config)).unwrap();
            let mut feed = Feed::new(&mut engine);
            feed.tick(&mut engine, 20);
            assert_eq!(somaxconn(), "8192");
        }
        let mut engine = Engine::new(scratch.tuning(&config)).unwrap();
        let restored = engine.recover();
        assert_eq!(outcomes(&restored), [Outcome::Restored]);
        assert_eq!(restored[0].event, "startup");
        assert_eq!(somaxconn(), original);
        assert!(scratch.state().managed().is_empty());
        // Every decision of the three runs is in the journal, with distinct ids.
        let journal = scratch.journal();
        let mut ids: Vec<&str> = journal.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), journal.len());
        assert_eq!(journal.last().unwrap(), &restored[0]);
    });
}

#[test]
fn experiments_revert_a_change_that_made_things_worse_and_keep_one_that_did_not() {
    in_netns(|| {
        let scratch = Scratch::new();
        let original = somaxconn();
        let experiment = "experiment = { window = \"2s\", worse_by = \"10%\" }\n";
        let mut engine = Engine::new(scratch.tuning(&rule("enforce", experiment))).unwrap();
        let mut feed = Feed::new(&mut engine);
        feed.tick(&mut engine, 0);
        assert_eq!(outcomes(&feed.tick(&mut engine, 20))[0], Outcome::Applied);
        // Before: 10/s. After the change: 30/s, three times worse.
        assert!(feed.tick(&mut engine, 30).is_empty());
        let verdict = feed.tick(&mut engine, 30);
        assert_eq!(outcomes(&verdict), [Outcome::Reverted]);
        assert_eq!(somaxconn(), original);
        let e = verdict[0].experiment.as_ref().unwrap();
        assert_eq!(e["before"]["value"], 10.0);
        assert_eq!(e["after"]["value"], 30.0);
        assert!(
            verdict[0].message.contains("got worse"),
            "{}",
            verdict[0].message
        );

        let scratch = Scratch::new();
        let mut engine = Engine::new(scratch.tuning(&rule("enforce", experiment))).unwrap();
        let mut feed = Feed::new(&mut engine);
        feed.tick(&mut engine, 0);
        feed.tick(&mut engine, 20);
        assert_eq!(somaxconn(), "8192");
        // Before and after: 10/s.
        feed.tick(&mut engine, 10);
        let verdict = feed.tick(&mut engine, 10);
        assert_eq!(outcomes(&verdict), [Outcome::Kept]);
        assert_eq!(somaxconn(), "8192");
        engine.shutdown(Duration::from_secs(1));
        assert_eq!(somaxconn(), original);
    });
}
