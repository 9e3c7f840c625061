//! The relay: one task per environment that has (or may soon have) subscribers. It owns the
//! subscribers, the init events kept for late subscribers, and the lines on their way; the
//! environment and the log's tap talk to it over one channel, so the records of an
//! invocation reach each subscriber in the order they happened (its lines before its
//! `platform.runtimeDone`). Delivering is each subscriber's own task (`delivery.rs`); the relay
//! only renders and offers, which never waits.
//!
//! Lines cross from the log's tap to the relay through a bounded budget of bytes: past it a
//! line is dropped on the spot and counted against every subscriber of its type, so a function
//! that floods its output can neither grow the relay's queue nor slow its own writes.

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

/// Bytes of lines that may wait between the tap and the relay.
const LINE_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes of lines kept during init for subscribers still to come; platform events are always
/// kept (there are a handful).
const KEPT_LINE_BYTES: usize = 1024 * 1024;

/// What the relay hears, in order.
#[derive(Debug)]
pub(super) enum Msg {
    /// A platform event.
    Event(Stamped),
    /// A line from the tap.
    Line {
        source: Source,
        time: SystemTime,
        line: Box<[u8]>,
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

/// What the tap and the relay share: which sources are wanted, and the lines' budget.
#[derive(Debug, Default)]
pub(super) struct Switch {
    function: AtomicBool,
    extension: AtomicBool,
    queued_bytes: AtomicUsize,
    dropped_records: AtomicU64,
    dropped_bytes: AtomicU64,
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
        let queued = self
            .switch
            .queued_bytes
            .fetch_add(line.len(), Ordering::AcqRel);
        if queued + line.len() > LINE_QUEUE_BYTES {
            self.switch
                .queued_bytes
                .fetch_sub(line.len(), Ordering::AcqRel);
            self.switch.dropped_records.fetch_add(1, Ordering::AcqRel);
            self.switch
                .dropped_bytes
                .fetch_add(line.len() as u64, Ordering::AcqRel);
            return;
        }
        let message = Msg::Line {
            source,
            time: SystemTime::now(),
            line: line.into(),
        };
        if self.tx.send(message).is_err() {
            self.switch
                .queued_bytes
                .fetch_sub(line.len(), Ordering::AcqRel);
        }
    }
}

/// Init events kept for subscribers still to come.
#[derive(Debug, Default)]
struct Kept {
    events: Vec<Stamped>,
    line_bytes: usize,
    /// Lines not kept (over [`KEPT_LINE_BYTES`]): a late subscriber is told it missed them.
    missed_records: u64,
    missed_bytes: u64,
}

#[derive(Debug)]
struct Subscriber {
    name: String,
    types: Types,
    audience: Audience,
    feed: Feed,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Relay {
    rx: mpsc::UnboundedReceiver<Msg>,
    switch: Arc<Switch>,
    control: Arc<dyn Control>,
    retry: Retry,
    subscribers: Vec<Subscriber>,
    /// Tasks of replaced subscriptions, finishing what they hold.
    replaced: Vec<JoinHandle<()>>,
    /// `None` once init is over.
    kept: Option<Kept>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The environment is gone: its subscribers' listeners with it.
        for s in &self.subscribers {
            s.task.abort();
        }
        for task in &self.replaced {
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
    };
    tokio::spawn(relay.run())
}

impl Relay {
    async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            // Lines the tap could not pass on are counted first, whatever comes next.
            self.count_tap_drops();
            match msg {
                Msg::Event(event) => self.broadcast(event, 0),
                Msg::Line { source, time, line } => {
                    self.switch
                        .queued_bytes
                        .fetch_sub(line.len(), Ordering::AcqRel);
                    let event = Event::Line {
                        source,
                        text: String::from_utf8_lossy(&line).into_owned(),
                    };
                    self.broadcast(Stamped { time, event }, line.len());
                }
                Msg::Subscribe { name, subscription } => self.subscribe(name, subscription),
                Msg::Close => self.kept = None,
                Msg::Flush(reply) => {
                    let _ = reply.send(self.subscribers.iter().map(|s| s.feed.flush()).collect());
                }
            }
        }
    }

    /// Lines the tap dropped count against every subscriber of lines.
    fn count_tap_drops(&mut self) {
        let records = self.switch.dropped_records.swap(0, Ordering::AcqRel);
        if records == 0 {
            return;
        }
        let bytes = self.switch.dropped_bytes.swap(0, Ordering::AcqRel);
        for s in self
            .subscribers
            .iter()
            .filter(|s| s.types.function || s.types.extension)
        {
            s.feed.dropped(records, bytes);
        }
    }

    /// Offers `event` to every subscriber of its type, rendered once per API; keeps it for
    /// later subscribers while init lasts (a line of `line_bytes` only within the budget).
    fn broadcast(&mut self, event: Stamped, line_bytes: usize) {
        let category = event.event.category();
        let mut rendered: Vec<(Audience, Vec<Bytes>)> = Vec::new();
        for s in self
            .subscribers
            .iter()
            .filter(|s| category.wanted_by(s.types))
        {
            let index = match rendered.iter().position(|(a, _)| *a == s.audience) {
                Some(index) => index,
                None => {
                    rendered.push((s.audience, event.render(s.audience)));
                    rendered.len() - 1
                }
            };
            for record in &rendered[index].1 {
                s.feed.offer(record.clone());
            }
        }
        let Some(kept) = &mut self.kept else {
            return;
        };
        if category == Category::Platform {
            kept.events.push(event);
        } else if kept.line_bytes + line_bytes <= KEPT_LINE_BYTES {
            kept.line_bytes += line_bytes;
            kept.events.push(event);
        } else {
            kept.missed_records += 1;
            kept.missed_bytes += line_bytes as u64;
        }
    }

    /// Starts a subscriber's delivery and replays what init has had so far. A repeated
    /// subscription of the same extension replaces its earlier one, which sends what it holds.
    fn subscribe(&mut self, name: String, subscription: Subscription) {
        if let Some(i) = self.subscribers.iter().position(|s| s.name == name) {
            let old = self.subscribers.remove(i);
            self.replaced.push(old.task);
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
            if (types.function || types.extension) && kept.missed_records > 0 {
                feed.dropped(kept.missed_records, kept.missed_bytes);
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
}
