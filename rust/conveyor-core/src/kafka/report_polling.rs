//! Who serves librdkafka's delivery reports: the threads that send, while
//! they send, and a polling thread otherwise.
//!
//! rdkafka's `ThreadedProducer` keeps a thread in `poll` all the time, so
//! while a caller sends, that thread wakes for every batch of reports and
//! frees records the caller allocated. On the project's 2-core machine that
//! thread took 14% of a single-enqueue loop's CPU, and glibc's malloc paid
//! for the frees from another thread: with reports served by the caller
//! alone, the loop ran 15% faster (docs/enqueue.md). Here the polling thread
//! steps aside while sends keep coming and polls again once they stop, so a
//! producer nobody sends on still gets its reports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::util::Timeout;

use super::poll_time::sleepable;
use crate::error::{Error, Result};

/// How long the polling thread stays away after it saw a send: reports that
/// arrive when the sends stop wait at most about this long.
const STEP_ASIDE: Duration = Duration::from_millis(1);

/// Steps without a send before the polling thread takes the long polls of
/// an idle producer.
const QUIET_STEPS: u32 = 20;

/// How long one poll of the polling thread lasts while nobody sends (it
/// returns early for nothing: rdkafka's `poll` serves until its deadline).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Single sends between two polls for reports.
const POLL_EVERY: u64 = 8;

/// A bound on the report events one serving takes (each is a batch of
/// reports), so a send never turns into an endless drain.
const MAX_SERVED_PER_SEND: usize = 64;

/// A record librdkafka did not take, given back with the reason.
pub type Refused<'a, K, P, C> = (
    KafkaError,
    BaseRecord<'a, K, P, <C as ProducerContext>::DeliveryOpaque>,
);

/// Which threads serve a producer's delivery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reports {
    /// Each send serves the reports waiting; the polling thread steps aside
    /// while sends keep coming. Fastest for a thread that sends many jobs;
    /// a report may wait up to about a millisecond when sends stop.
    SendersFirst,
    /// The polling thread serves reports as they arrive, as well as the
    /// sends: for a server whose every request waits for its ack (the
    /// gate), where an idle runtime thread must not delay an answer.
    Thread,
}

/// Counters the polling thread and the senders share.
#[derive(Default)]
pub struct Activity {
    /// Calls to [`PolledProducer::serve_waiting`].
    servings: AtomicU64,
    /// Delivery reports served; the producer context counts them.
    served: AtomicU64,
    stop: AtomicBool,
}

impl Activity {
    /// Counts one delivery report served (called by the producer context).
    pub fn report_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// A librdkafka producer whose reports are served as [`Reports`] says.
pub struct PolledProducer<C: ProducerContext + 'static> {
    base: Arc<BaseProducer<C>>,
    activity: Arc<Activity>,
    thread: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    /// Starts the polling thread for `base`; its context must call
    /// [`Activity::report_served`] on `activity` for every report.
    pub fn start(base: BaseProducer<C>, activity: Arc<Activity>, reports: Reports) -> Result<Self> {
        let base = Arc::new(base);
        let thread = std::thread::Builder::new()
            .name("conveyor-reports".into())
            .spawn({
                let base = Arc::clone(&base);
                let activity = Arc::clone(&activity);
                move || match reports {
                    Reports::SendersFirst => poll_while_idle(&base, &activity),
                    Reports::Thread => poll_always(&base, &activity),
                }
            })
            .map_err(|e| Error::Kafka {
                op: "start the delivery report thread",
                source: KafkaError::ClientCreation(e.to_string()),
            })?;
        Ok(Self {
            base,
            activity,
            thread: Some(thread),
        })
    }

    /// Hands one record to librdkafka (never blocks).
    #[allow(clippy::result_large_err)]
    pub fn send<'a, K, P>(
        &self,
        record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    ) -> std::result::Result<(), Refused<'a, K, P, C>>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.base.send(record)
    }

    /// Serves the reports waiting now, on this thread: the records are then
    /// freed where they were allocated. Called once per send call.
    /// `step_aside` asks the polling thread to leave the reports to the
    /// senders while such calls keep coming: right for single sends, which
    /// are short and many. A long batch call leaves it `false`: while it
    /// runs, the polling thread serves the reports on the other core.
    pub fn serve_waiting(&self, step_aside: bool) {
        if step_aside {
            let n = self.activity.servings.fetch_add(1, Ordering::Relaxed);
            // A poll costs three clock reads in rdkafka even with nothing to
            // serve, and reports come in batches far rarer than single sends:
            // every few sends is soon enough.
            if !n.is_multiple_of(POLL_EVERY) {
                return;
            }
        }
        for _ in 0..MAX_SERVED_PER_SEND {
            let before = self.activity.served.load(Ordering::Relaxed);
            // rdkafka's poll with no timeout serves at most one event.
            self.base.poll(Duration::ZERO);
            if self.activity.served.load(Ordering::Relaxed) == before {
                break;
            }
        }
    }

    /// Serves reports for up to `timeout` (while waiting for room in
    /// librdkafka's queue, which only served reports make).
    pub fn poll(&self, timeout: Duration) {
        self.base.poll(timeout);
    }

    /// Delivers everything queued, serving reports until done or `timeout`.
    pub fn flush(&self, timeout: impl Into<Timeout>) -> KafkaResult<()> {
        self.base.flush(timeout)
    }

    /// The underlying client (metadata requests).
    pub fn client(&self) -> &rdkafka::client::Client<C> {
        self.base.client()
    }
}

impl<C: ProducerContext + 'static> Drop for PolledProducer<C> {
    fn drop(&mut self) {
        self.activity.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // At most one IDLE_POLL: the thread checks `stop` between polls.
            let _ = thread.join();
        }
    }
}

fn poll_always<C: ProducerContext>(base: &BaseProducer<C>, activity: &Activity) {
    while !activity.stop.load(Ordering::Relaxed) {
        base.poll(sleepable(IDLE_POLL));
    }
}

fn poll_while_idle<C: ProducerContext>(base: &BaseProducer<C>, activity: &Activity) {
    let mut seen = activity.servings.load(Ordering::Relaxed);
    let mut quiet_steps = 0;
    while !activity.stop.load(Ordering::Relaxed) {
        let now = activity.servings.load(Ordering::Relaxed);
        if now != seen {
            // Someone sent since the last look: their sends serve the reports.
            seen = now;
            quiet_steps = 0;
            std::thread::sleep(STEP_ASIDE);
        } else if quiet_steps < QUIET_STEPS {
            // A sender paused (or was descheduled on a busy machine): serve
            // what waits, one short step at a time, ready to step aside.
            quiet_steps += 1;
            base.poll(sleepable(STEP_ASIDE));
        } else {
            base.poll(sleepable(IDLE_POLL));
        }
    }
}
