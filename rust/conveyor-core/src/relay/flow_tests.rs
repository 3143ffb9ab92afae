//! Unit tests of the relay's flow decisions (`flow.rs`).

use std::sync::Arc;

use super::*;

fn record(topic: &str, partition: i32, offset: i64) -> Record {
    Record {
        topic: Arc::from(topic),
        partition,
        offset,
        kafka_us: 0,
        value: Vec::new(),
    }
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
        .collect()
}

fn flow(batch_max: usize) -> Flow {
    Flow::new(
        Guard::new(0.8, 0.6, Some(100), 50),
        HashMap::from([("t".to_owned(), 4)]),
        batch_max,
    )
}

#[test]
fn controls_ignore_values_they_do_not_mean_and_say_why() {
    let c = Controls::parse(fields(&[
        ("rate:a", "10"),
        ("rate:b", "-1"),
        ("rate:c", "NaN"),
        ("rate:d", "inf"),
        ("rate:e", "fast"),
        ("paused:p", "1"),
        ("shadow:s", "1"),
        ("shadow:z", "0"),
        ("paused:q", "no"),
        ("other", "x"),
    ]));
    assert_eq!(c.rates, HashMap::from([("a".to_owned(), 10.0)]));
    assert_eq!(c.paused, HashSet::from(["p".to_owned()]));
    assert_eq!(c.shadow, HashSet::from(["s".to_owned()]));
    assert_eq!(c.state().rates, vec![("a".to_owned(), 10.0)]);
    let ignored: Vec<&str> = c.ignored.iter().map(|(f, _, _)| f.as_str()).collect();
    assert_eq!(
        ignored,
        ["other", "paused:q", "rate:b", "rate:c", "rate:d", "rate:e", "shadow:z"]
    );
    assert!(c.ignored.iter().all(|(_, _, why)| !why.is_empty()));
}

#[test]
fn memory_guard_engages_at_the_high_mark_and_releases_only_below_the_low_one() {
    let mut g = Guard::new(0.8, 0.6, None, 0);
    assert_eq!(g.update(79, 100, &[]), 0);
    assert!(!g.memory_on);
    assert_eq!(g.update(80, 100, &[]), 1);
    assert!(g.memory_on);
    assert_eq!(g.update(70, 100, &[]), 0, "between the marks: still on");
    assert!(g.memory_on);
    g.update(60, 100, &[]);
    assert!(!g.memory_on);
    g.update(95, 100, &[]);
    g.update(95, 0, &[]);
    assert!(!g.memory_on, "no maxmemory: no memory guard");
}

#[test]
fn depth_guard_holds_each_queue_between_its_marks() {
    let mut g = Guard::new(0.8, 0.6, Some(100), 50);
    let d = |a: u64, b: u64| vec![("a".to_owned(), a), ("b".to_owned(), b)];
    assert_eq!(g.update(0, 0, &d(100, 10)), 1);
    assert_eq!(g.deep, HashSet::from(["a".to_owned()]));
    assert_eq!(g.update(0, 0, &d(60, 200)), 1, "b engages, a stays");
    assert_eq!(g.deep.len(), 2);
    g.update(0, 0, &d(50, 51));
    assert_eq!(g.deep, HashSet::from(["b".to_owned()]));
    let mut none = Guard::new(0.8, 0.6, None, 0);
    assert_eq!(none.update(0, 0, &d(1_000_000, 0)), 0);
}

#[test]
fn bucket_releases_the_rate_and_saves_up_at_most_a_quarter_second() {
    let start = Instant::now();
    let mut b = Bucket::new(start);
    assert_eq!(b.take(100.0, start, 1000), 0);
    assert_eq!(b.take(100.0, start + Duration::from_millis(100), 1000), 10);
    // Ten idle seconds save up a quarter second (25) plus one.
    assert_eq!(b.take(100.0, start + Duration::from_secs(10), 1000), 26);
    assert_eq!(b.take(100.0, start + Duration::from_secs(20), 3), 3);
}

#[test]
fn a_relay_takes_its_share_of_a_topics_rate() {
    assert_eq!(rate_share(100.0, 1, 4), 25.0);
    assert_eq!(rate_share(100.0, 4, 4), 100.0);
    assert_eq!(rate_share(100.0, 0, 0), 100.0);
    assert_eq!(rate_share(100.0, 6, 4), 100.0, "more owned than known");
}

#[test]
fn paused_and_guarded_topics_hold_their_jobs_and_pause_their_partitions() {
    let mut f = flow(10);
    let owned = vec![("t".to_owned(), 0), ("u".to_owned(), 0)];
    assert!(
        f.pauses(&owned).pause.is_empty(),
        "a new assignment is resumed"
    );
    f.set_controls(Controls::parse(fields(&[("paused:t", "1")])));
    let change = f.pauses(&owned);
    assert_eq!(change.pause, vec![("t".to_owned(), 0)]);
    assert!(change.resume.is_empty());
    f.hold(vec![record("t", 0, 1), record("u", 0, 1)]);
    let out = f.release(Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].topic, "u");
    assert_eq!(f.held(), 1);
    f.set_controls(Controls::default());
    assert_eq!(f.pauses(&owned).resume, vec![("t".to_owned(), 0)]);
    assert_eq!(f.release(Instant::now()).len(), 1);
    f.guard.memory_on = true;
    assert_eq!(
        f.pauses(&owned).pause.len(),
        2,
        "the memory guard stops all"
    );
}

#[test]
fn a_full_batch_held_for_the_rate_pauses_fetching_and_less_does_not() {
    let mut f = flow(2);
    let owned = vec![("t".to_owned(), 0)];
    f.set_controls(Controls::parse(fields(&[("rate:t", "1")])));
    f.hold(vec![record("t", 0, 1)]);
    assert!(f.pauses(&owned).pause.is_empty());
    f.hold(vec![record("t", 0, 2)]);
    assert_eq!(f.pauses(&owned).pause, owned);
}

#[test]
fn a_partition_paused_when_it_left_is_resumed_when_it_comes_back() {
    let mut f = flow(10);
    let (p0, p1) = (("t".to_owned(), 0), ("t".to_owned(), 1));
    f.set_controls(Controls::parse(fields(&[("paused:t", "1")])));
    let both = vec![p0.clone(), p1.clone()];
    assert_eq!(sorted(f.pauses(&both).pause), both);
    // A rebalance takes p0 away (still paused in the consumer), the pause
    // is lifted meanwhile, and p0 comes back.
    let away = f.pauses(std::slice::from_ref(&p1));
    assert!(away.pause.contains(&p1));
    f.set_controls(Controls::default());
    let back = f.pauses(&both);
    assert_eq!(
        sorted(back.resume),
        both,
        "p0 must be resumed: it was paused when it left"
    );
    assert!(back.pause.is_empty());
}

fn sorted(mut v: Vec<(String, i32)>) -> Vec<(String, i32)> {
    v.sort();
    v
}

#[test]
fn a_new_assignment_drops_held_jobs_of_partitions_gone_elsewhere() {
    let mut f = flow(10);
    f.pauses(&[("t".to_owned(), 0), ("t".to_owned(), 1)]);
    f.hold(vec![
        record("t", 0, 1),
        record("t", 1, 1),
        record("t", 1, 2),
    ]);
    f.pauses(&[("t".to_owned(), 0)]);
    assert_eq!(f.held(), 1);
    let out = f.release(Instant::now());
    assert_eq!((out[0].partition, out[0].offset), (0, 1));
}

#[test]
fn a_throttled_topic_releases_in_order_at_its_share_of_the_rate() {
    let mut f = flow(1000);
    // 1 of 4 partitions owned: a quarter of 400/s is 100/s.
    f.pauses(&[("t".to_owned(), 0)]);
    f.set_controls(Controls::parse(fields(&[("rate:t", "400")])));
    f.hold((0..1000).map(|o| record("t", 0, o)).collect());
    let start = Instant::now();
    assert!(f.release(start).is_empty());
    let out = f.release(start + Duration::from_millis(200));
    assert_eq!(out.len(), 20);
    assert!(out.iter().enumerate().all(|(i, r)| r.offset == i as i64));
}
