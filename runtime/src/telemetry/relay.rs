//! The relay: one task per environment that has (or may soon have) subscribers. It owns the
//! subscribers, the init events kept for late subscribers, and the lines on their way; the
//! environment and the log's tap talk to it over one channel, so the records of an
//! invocation reach each subscriber in the order they happened (its lines before its
//! `platform.runtimeDone`). Delivering is each subscriber's own task (`delivery.rs`); the relay
//! only renders and offers, which never waits.
//!
//! Lines cross from the log's tap to the relay through a bounded budget of bytes: past it a
//! line is dropped on the spot and counted, by its source, against every subscriber of that
//! source's lines (and, during init, against those still to come), so a function that floods
//! its output can neither grow the relay's queue nor slow its own writes. Each line costs its
//! bytes and a fixed [`LINE_OVERHEAD`] there and in what init keeps: a line is a message and an
//! event whatever its length, and empty lines must not be free.
//!
//! An extension may subscribe again during init, each time with a replay of what init has had;
//! its earlier delivery task sends what it holds and ends. Only one such predecessor per
//! extension is let finish (an older one still at it is stopped), and init keeps only the
//! latest `platform.telemetrySubscription` of each: repeating a subscription costs nothing that
//! grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::delivery::{self, Feed, Retry};
use super::records::{Audience, Category, Event, Stamped};
use super::subscription::{Subscription, Types};
use crate::logs::{LineTap, Source};
use crate::sandbox::Control;

/// The most the relay's rendering buffer keeps between events.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;
/// Bytes of lines that may wait between the tap and the relay.
const LINE_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of lines kept during init for subscribers still to come; platform events are always
/// kept (there are a handful).
const KEPT_LINE_BYTES: usize = 1024 * 1024;
/// What a line costs against [`LINE_QUEUE_BYTES`] and [`KEPT_LINE_BYTES`] beyond its bytes: a
/// fixed charge for its message or its kept event, whatever the line's length, so that empty
/// lines are not free. The budgets bound memory roughly, not to the byte.
const LINE_OVERHEAD: usize = 64;

/// What the relay hears, in order.
#[derive(Debug)]
pub(super) enum Msg {
    /// A platform event.
    Event(Stamped),
    /// A line from the tap, and what it was charged against the queue's budget.
    Line {
        source: Source,
        time: SystemTime,
        line: Box<[u8]>,
        cost: usize,
    },
    /// A new (or replacing) subscriber.
    Subscribe {
        name: String,
        subscription: Subscription,
    },
    /// Init is over: nothing more is kept for later subscribers.
    Close,
    /// Every subscriber is to send what it holds; the answer is one receiver per subscriber,
    /// resolving when it has.
    Flush(oneshot::Sender<Vec<oneshot::Receiver<()>>>),
}

/// What a line costs against the budgets: its bytes and [`LINE_OVERHEAD`].
fn line_cost(bytes: usize) -> usize {
    bytes + LINE_OVERHEAD
}

/// Lines of one source that were not passed on, and their bytes.
#[derive(Debug, Default)]
struct Dropped {
    records: AtomicU64,
    bytes: AtomicU64,
}

/// What the tap and the relay share: which sources are wanted, the lines' budget, and the
/// lines the tap dropped (per source: each is counted against its own subscribers).
#[derive(Debug, Default)]
pub(super) struct Switch {
    function: AtomicBool,
    extension: AtomicBool,
    queued_bytes: AtomicUsize,
    dropped_function: Dropped,
    dropped_extension: Dropped,
}

impl Switch {
    /// Lines of these types are wanted from now on.
    pub(super) fn want(&self, types: Types) {
        self.function.store(types.function, Ordering::Release);
        self.extension.store(types.extension, Ordering::Release);
    }

    /// Whether lines of `source` are wanted now.
    pub(super) fn wants(&self, source: Source) -> bool {
        match source {
            Source::Function => self.function.load(Ordering::Acquire),
            Source::Extension => self.extension.load(Ordering::Acquire),
        }
    }

    fn dropped(&self, source: Source) -> &Dropped {
        match source {
            Source::Function => &self.dropped_function,
            Source::Extension => &self.dropped_extension,
        }
    }

    /// The lines of `source` dropped since the last call, and their bytes, if any.
    fn take_dropped(&self, source: Source) -> Option<(u64, u64)> {
        let dropped = self.dropped(source);
        let records = dropped.records.swap(0, Ordering::AcqRel);
        // A drop counted between the two swaps has its bytes taken now and its record next
        // time: the totals stay right.
        let bytes = dropped.bytes.swap(0, Ordering::AcqRel);
        (records > 0).then_some((records, bytes))
    }
}

/// The log's tap: lines go to the relay while someone wants their source.
#[derive(Debug)]
pub(super) struct LineFeed {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) switch: Arc<Switch>,
}

impl LineTap for LineFeed {
    fn line(&self, source: Source, line: &[u8]) {
        if !self.switch.wants(source) {
            return;
        }
        let cost = line_cost(line.len());
        let queued = self.switch.queued_bytes.fetch_add(cost, Ordering::AcqRel);
        if queued + cost > LINE_QUEUE_BYTES {
            self.switch.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
            let dropped = self.switch.dropped(source);
            dropped.records.fetch_add(1, Ordering::AcqRel);
            dropped.bytes.fetch_add(line.len() as u64, Ordering::AcqRel);
            return;
        }
        let message = Msg::Line {
            source,
            time: SystemTime::now(),
            line: line.into(),
            cost,
        };
        if self.tx.send(message).is_err() {
            self.switch.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
        }
    }
}

/// Lines of one source a late subscriber missed, and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Missed {
    records: u64,
    bytes: u64,
}

/// Init events kept for subscribers still to come.
#[derive(Debug, Default)]
struct Kept {
    events: Vec<Stamped>,
    /// What the kept lines cost against [`KEPT_LINE_BYTES`].
    line_cost: usize,
    /// Lines not kept (over [`KEPT_LINE_BYTES`], or dropped by the tap): a late subscriber of
    /// their source is told it missed them.
    missed_function: Missed,
    missed_extension: Missed,
}

impl Kept {
    fn missed(&mut self, source: Source) -> &mut Missed {
        match source {
            Source::Function => &mut self.missed_function,
            Source::Extension => &mut self.missed_extension,
        }
    }

    /// What a subscriber asking for `types` missed.
    fn missed_by(&self, types: Types) -> Missed {
        [
            (types.function, self.missed_function),
            (types.extension, self.missed_extension),
        ]
        .into_iter()
        .filter(|(wanted, _)| *wanted)
        .fold(Missed::default(), |all, (_, m)| Missed {
            records: all.records + m.records,
            bytes: all.bytes + m.bytes,
        })
    }
}

/// A line as the relay got it: its source, its bytes and its cost against the budgets.
#[derive(Debug, Clone, Copy)]
struct LineSize {
    source: Source,
    bytes: usize,
    cost: usize,
}

/// One subscription as the relay keeps it: what it wants, for which API, and the feed of its
/// delivery task.
#[derive(Debug)]
struct Subscriber {
    name: String,
    types: Types,
    audience: Audience,
    feed: Feed,
    task: JoinHandle<()>,
}

/// The relay's state: the environment's and the tap's channel, the subscribers, and during
/// init the events kept for subscribers still to come. It alone owns them.
#[derive(Debug)]
struct Relay {
    rx: mpsc::UnboundedReceiver<Msg>,
    switch: Arc<Switch>,
    control: Arc<dyn Control>,
    retry: Retry,
    subscribers: Vec<Subscriber>,
    /// Tasks of replaced subscriptions, finishing what they hold: at most one per extension.
    replaced: Vec<(String, JoinHandle<()>)>,
    /// `None` once init is over.
    kept: Option<Kept>,
    /// What [`Relay::broadcast`] renders with, kept from event to event so that rendering
    /// allocates only the records themselves.
    rendering: Rendering,
}

/// One event's records, by audience (subscribers of one API mostly share one), and the
/// buffer each record is written in first.
#[derive(Debug, Default)]
struct Rendering {
    /// Where each record is written before it is copied out at its size.
    scratch: Vec<u8>,
    /// The event's records, every audience's one after another.
    records: Vec<Bytes>,
    /// Each audience rendered, with where its records are in `records`.
    audiences: Vec<(Audience, std::ops::Range<usize>)>,
    /// For each subscriber that wants the event, in order: its index in `audiences`.
    assigned: Vec<usize>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The environment is gone: its subscribers' listeners with it.
        for s in &self.subscribers {
            s.task.abort();
        }
        for (_, task) in &self.replaced {
            task.abort();
        }
    }
}

/// Starts the relay with the init events so far; it ends when every sender is gone (or it is
/// aborted with its environment).
pub(super) fn spawn(
    rx: mpsc::UnboundedReceiver<Msg>,
    switch: Arc<Switch>,
    control: Arc<dyn Control>,
    kept: Vec<Stamped>,
    retry: Retry,
) -> JoinHandle<()> {
    let relay = Relay {
        rx,
        switch,
        control,
        retry,
        subscribers: Vec::new(),
        replaced: Vec::new(),
        kept: Some(Kept {
            events: kept,
            ..Kept::default()
        }),
        rendering: Rendering::default(),
    };
    tokio::spawn(relay.run())
}

impl Relay {
    async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        // Lines the tap could not pass on are counted first, whatever comes next.
        self.count_tap_drops();
        match msg {
            Msg::Event(event) => self.broadcast(event, None),
            Msg::Line {
                source,
                time,
                line,
                cost,
            } => {
                self.switch.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
                let size = LineSize {
                    source,
                    bytes: line.len(),
                    cost,
                };
                let event = Event::Line {
                    source,
                    text: String::from_utf8_lossy(&line).into_owned(),
                };
                self.broadcast(Stamped { time, event }, Some(size));
            }
            Msg::Subscribe { name, subscription } => self.subscribe(name, subscription),
            Msg::Close => self.kept = None,
            Msg::Flush(reply) => {
                let _ = reply.send(self.subscribers.iter().map(|s| s.feed.flush()).collect());
            }
        }
    }

    /// Lines the tap dropped count against every subscriber of their source, and, while init
    /// lasts, against those still to come.
    fn count_tap_drops(&mut self) {
        for source in [Source::Function, Source::Extension] {
            let Some((records, bytes)) = self.switch.take_dropped(source) else {
                continue;
            };
            let category = Category::from(source);
            for s in self
                .subscribers
                .iter()
                .filter(|s| category.wanted_by(s.types))
            {
                s.feed.dropped(records, bytes);
            }
            if let Some(kept) = &mut self.kept {
                let missed = kept.missed(source);
                missed.records += records;
                missed.bytes += bytes;
            }
        }
    }

    /// Offers `event` to every subscriber of its type, rendered once per API; keeps it for
    /// later subscribers while init lasts (a `line` only within the budget).
    fn broadcast(&mut self, event: Stamped, line: Option<LineSize>) {
        let category = event.event.category();
        let r = &mut self.rendering;
        let wanting = || {
            self.subscribers
                .iter()
                .filter(|s| category.wanted_by(s.types))
        };
        for s in wanting() {
            let index = match r.audiences.iter().position(|(a, _)| *a == s.audience) {
                Some(index) => index,
                None => {
                    let from = r.records.len();
                    event.render_into(s.audience, &mut r.scratch, &mut r.records);
                    r.audiences.push((s.audience, from..r.records.len()));
                    r.audiences.len() - 1
                }
            };
            r.assigned.push(index);
        }
        // The last subscriber of an audience takes its records; those before it, copies
        // (a copy shares the bytes).
        for (i, s) in wanting().enumerate() {
            let index = r.assigned[i];
            let last = !r.assigned[i + 1..].contains(&index);
            for record in &mut r.records[r.audiences[index].1.clone()] {
                s.feed.offer(if last {
                    std::mem::take(record)
                } else {
                    record.clone()
                });
            }
        }
        r.records.clear();
        r.audiences.clear();
        r.assigned.clear();
        // One long line (256 KiB, up to six times that as JSON) must not stay held by every
        // relay for its environment's life: the scratch keeps what an ordinary record needs.
        if r.scratch.capacity() > SCRATCH_KEPT_BYTES {
            r.scratch = Vec::new();
        }
        let Some(kept) = &mut self.kept else {
            return;
        };
        match line {
            None => {
                // A later subscriber learns of each extension's latest subscription only.
                if let Event::Subscribed { name, .. } = &event.event {
                    kept.events.retain(
                        |e| !matches!(&e.event, Event::Subscribed { name: n, .. } if n == name),
                    );
                }
                kept.events.push(event);
            }
            Some(line) if kept.line_cost + line.cost <= KEPT_LINE_BYTES => {
                kept.line_cost += line.cost;
                kept.events.push(event);
            }
            Some(line) => {
                let missed = kept.missed(line.source);
                missed.records += 1;
                missed.bytes += line.bytes as u64;
            }
        }
    }

    /// Starts a subscriber's delivery and replays what init has had so far. A repeated
    /// subscription of the same extension replaces its earlier one, which sends what it holds.
    fn subscribe(&mut self, name: String, subscription: Subscription) {
        if let Some(i) = self.subscribers.iter().position(|s| s.name == name) {
            let old = self.subscribers.remove(i);
            self.retire(old);
        }
        let audience = Audience {
            api: subscription.api,
            logs_runtime_done: subscription.logs_runtime_done(),
        };
        let types = subscription.types;
        let (feed, task) = delivery::spawn(
            name.clone(),
            subscription.destination,
            subscription.buffering,
            audience,
            types.platform,
            Arc::clone(&self.control),
            self.retry,
        );
        if let Some(kept) = &self.kept {
            for event in kept
                .events
                .iter()
                .filter(|e| e.event.category().wanted_by(types))
            {
                for record in event.render(audience) {
                    feed.offer(record);
                }
            }
            let missed = kept.missed_by(types);
            if missed.records > 0 {
                feed.dropped(missed.records, missed.bytes);
            }
        }
        self.subscribers.push(Subscriber {
            name,
            types,
            audience,
            feed,
            task,
        });
    }

    /// A replaced subscriber: its feed goes (its task sends what it holds, then ends), its
    /// task is kept to be stopped with the environment. One predecessor per extension is let
    /// finish: an older one still at it is stopped now, and finished ones are forgotten.
    fn retire(&mut self, old: Subscriber) {
        let Subscriber { name, task, .. } = old;
        self.replaced.retain(|(n, t)| {
            if *n == name {
                t.abort();
            }
            *n != name && !t.is_finished()
        });
        self.replaced.push((name, task));
    }
}

#[cfg(test)]
mod tests;
