//! Where accepted `Event` invocations are kept until they have run: the durable half of the
//! asynchronous queue. An event is in the store before its `202` is sent, and leaves it only
//! when it has run (or gone to its failure destination), so a `kill -9` or a power loss between
//! the two loses nothing: on the next start every event still in the store runs again. That is
//! Lambda's at-least-once: an event that had run but was not yet removed runs twice; none runs
//! zero times.
//!
//! The store is a trait, [`EventStore`], with the embedded SQLite store in [`sqlite`]; writes go
//! through one thread, the [`Committer`], which commits whatever has gathered while the
//! previous commit was syncing in a single transaction (group commit): one fsync covers many
//! accepts, which is what makes durability cheap.

pub mod listing;
pub mod postgres;
pub mod sqlite;

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

/// An event as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The request id returned with `202`; every attempt runs under it.
    pub request_id: String,
    /// The function's name.
    pub function: String,
    /// The event.
    pub payload: Bytes,
    /// `X-Amz-Client-Context`, decoded.
    pub client_context: Option<String>,
    /// The caller's trace header.
    pub trace_id: Option<String>,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub accepted_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due, in milliseconds since the Unix epoch (0: at once).
    pub due_ms: u64,
    /// The store's own key for it, once stored ([`EventKey::seq`]); what an append is given
    /// is ignored.
    pub seq: Option<i64>,
}

impl StoredEvent {
    /// How its retries and its removal name it to the store.
    pub fn key(&self) -> EventKey {
        EventKey::new(&self.request_id, self.seq)
    }
}

/// How a store finds an event it holds: the request id, and the store's own key for it where
/// it has one, given at the event's append and kept by whoever holds the event (the queue).
/// The SQLite store's `seq` (in accept order) is such a key: with it a removal touches the
/// table's key alone, and nobody keeps a map from request id to key (a map of every queued
/// event, rehashed at once as it grows, held the writer for 160-340 ms at 230,000 and
/// 460,000 queued events; design note 005, "Keys"). A store keyed by request id alone
/// (PostgreSQL's) gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    /// The request id returned with `202`.
    pub request_id: String,
    /// The store's key, if it gave one.
    pub seq: Option<i64>,
}

impl EventKey {
    /// The key of the event `request_id`, with the store's own `seq` where it gave one.
    pub fn new(request_id: &str, seq: Option<i64>) -> EventKey {
        EventKey {
            request_id: request_id.to_owned(),
            seq,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `ms` milliseconds after the Unix epoch.
pub fn from_epoch_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A store that cannot do what was asked, naming the file or server at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the event store {place}: {reason}")]
pub struct StoreError {
    /// The file (or server).
    pub place: String,
    /// What went wrong.
    pub reason: String,
}

/// One group commit's writes: what arrived while the previous commit was syncing.
#[derive(Debug, Default)]
pub struct Batch {
    /// New events, to be durable before their `202`.
    pub appends: Vec<StoredEvent>,
    /// Retries: the event, attempts so far, when the next is due.
    pub reschedules: Vec<(EventKey, u32, u64)>,
    /// Events that have run, or gone to their failure destination.
    pub removals: Vec<EventKey>,
}

/// Durable storage of accepted events. Every method may block (a disk write, a sync); the
/// [`Committer`] calls them on a thread of its own.
pub trait EventStore: Send + 'static {
    /// Makes `events` durable, all or none, before it returns; the key it gave each
    /// ([`EventKey::seq`]), in order.
    fn append(&mut self, events: &[StoredEvent]) -> Result<Vec<Option<i64>>, StoreError>;
    /// Records the next attempt of an event that failed.
    fn reschedule(
        &mut self,
        event: &EventKey,
        attempts: u32,
        due_ms: u64,
    ) -> Result<(), StoreError>;
    /// Forgets events that have run, or gone to their failure destination.
    fn remove(&mut self, events: &[EventKey]) -> Result<(), StoreError>;
    /// Applies a whole batch, all or none, with one sync where the store can: the appends,
    /// then the retries, then the removals (a retry or removal never precedes its event's
    /// append: an event is queued only once its append is durable). The default applies
    /// them one after the other. The appended events' keys, in order.
    fn commit(&mut self, batch: &Batch) -> Result<Vec<Option<i64>>, StoreError> {
        let keys = match batch.appends.is_empty() {
            true => Vec::new(),
            false => self.append(&batch.appends)?,
        };
        for (event, attempts, due_ms) in &batch.reschedules {
            self.reschedule(event, *attempts, *due_ms)?;
        }
        if !batch.removals.is_empty() {
            self.remove(&batch.removals)?;
        }
        Ok(keys)
    }
    /// Every event still to run, oldest first: what a start resumes. A shared store answers
    /// none: its events are taken over by [`EventStore::take_over`], as their leases allow.
    fn pending(&mut self) -> Result<Vec<StoredEvent>, StoreError>;

    /// Whether other servers use this store too, and for how long a lease lasts unrenewed:
    /// then every event is leased by the server that runs it, leases are renewed while it
    /// holds them, and events whose lease has lapsed (their server died) are taken over.
    fn lease(&self) -> Option<Duration> {
        None
    }
    /// Leases, to this server, up to `limit` events of `functions` that no live server holds,
    /// oldest first: a shared store's way to resume. A store of one server has none.
    fn take_over(
        &mut self,
        functions: &[String],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = (functions, limit);
        Ok(Vec::new())
    }
    /// Extends the leases of every event this server holds.
    fn renew(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Gives up this server's leases (it is stopping): others may take its events at once.
    fn release(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store that keeps nothing: durability off, for the benchmark that measures what it
/// costs (`LAMINA_TEST_QUEUE=volatile`). Never a default: a `202` from it promises nothing.
#[derive(Debug, Default)]
pub struct Volatile;

impl EventStore for Volatile {
    fn append(&mut self, events: &[StoredEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        Ok(vec![None; events.len()])
    }
    fn reschedule(&mut self, _: &EventKey, _: u32, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&mut self, _: &[EventKey]) -> Result<(), StoreError> {
        Ok(())
    }
    fn pending(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(Vec::new())
    }
}

enum Write {
    Append(
        StoredEvent,
        oneshot::Sender<Result<Option<i64>, StoreError>>,
    ),
    Reschedule(EventKey, u32, u64),
    Remove(EventKey),
    Flush(oneshot::Sender<()>),
    TakeOver(
        Vec<String>,
        usize,
        oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>,
    ),
    Renew,
    Release(oneshot::Sender<()>),
}

/// The one writer of a store: a thread that batches every write that arrives while it is
/// committing, and answers each append once its batch is durable. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: std_mpsc::Sender<Write>,
    lease: Option<Duration>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

impl Committer {
    /// Starts the writer thread over `store`.
    pub fn start(mut store: impl EventStore) -> Committer {
        let lease = store.lease();
        let (tx, rx) = std_mpsc::channel::<Write>();
        std::thread::Builder::new()
            .name("lamina-event-store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everything that came in while the last commit was syncing: one batch.
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    commit(&mut store, batch);
                }
            })
            .expect("spawn the event store's writer thread");
        Committer { tx, lease }
    }

    /// The lease of a store shared with other servers ([`EventStore::lease`]).
    pub fn lease(&self) -> Option<Duration> {
        self.lease
    }

    /// Leases events of `functions` that no live server holds ([`EventStore::take_over`]).
    pub async fn take_over(
        &self,
        functions: Vec<String>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (done, taken) = oneshot::channel();
        let gone = || StoreError {
            place: "writer".into(),
            reason: "the store's writer has stopped".into(),
        };
        self.tx
            .send(Write::TakeOver(functions, limit, done))
            .map_err(|_| gone())?;
        taken.await.map_err(|_| gone())?
    }

    /// Renews this server's leases. Not waited for: a renewal that fails is logged, and the
    /// lease lapses only if they keep failing.
    pub fn renew(&self) {
        let _ = self.tx.send(Write::Renew);
    }

    /// Commits what was sent before, then gives up this server's leases.
    pub async fn release(&self) {
        let (done, released) = oneshot::channel();
        if self.tx.send(Write::Release(done)).is_ok() {
            let _ = released.await;
        }
    }

    /// Stores `event`; resolves once it is durable, with the key the store gave it
    /// ([`EventKey::seq`]).
    pub async fn append(&self, event: StoredEvent) -> Result<Option<i64>, StoreError> {
        let (done, durable) = oneshot::channel();
        let gone = || StoreError {
            place: "writer".into(),
            reason: "the store's writer has stopped".into(),
        };
        self.tx
            .send(Write::Append(event, done))
            .map_err(|_| gone())?;
        durable.await.map_err(|_| gone())?
    }

    /// Records a retry. Not waited for: a retry lost in a crash is an attempt run again.
    pub fn reschedule(&self, event: EventKey, attempts: u32, due_ms: u64) {
        let _ = self.tx.send(Write::Reschedule(event, attempts, due_ms));
    }

    /// Forgets an event. Not waited for: an event not yet forgotten at a crash runs again.
    pub fn remove(&self, event: EventKey) {
        let _ = self.tx.send(Write::Remove(event));
    }

    /// Resolves when every write sent before it has been committed.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Write::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Answers each waiting append with its key, in order. One key per append is the store's
/// contract; a store that broke it says so to the callers it left without a key (their events
/// may be stored: a client that sends again gets at-least-once), not "the writer has stopped".
fn answer_appends(
    waiting: Vec<oneshot::Sender<Result<Option<i64>, StoreError>>>,
    keys: Vec<Option<i64>>,
) {
    let (asked, answered) = (waiting.len(), keys.len());
    if asked != answered {
        tracing::error!("the event store answered {answered} keys for {asked} accepted events");
    }
    let mut keys = keys.into_iter();
    for done in waiting {
        let _ = done.send(keys.next().ok_or_else(|| StoreError {
            place: "writer".into(),
            reason: format!("the store answered {answered} keys for {asked} events"),
        }));
    }
}

/// Applies one batch in one transaction (one sync for every write that arrived together);
/// the appends' callers learn the outcome. Should the whole fail, the appends are tried on
/// their own, so that a retry or removal the store refuses never costs a caller its `202`;
/// retries and removals that fail are logged (those events run again at the next start).
fn commit(store: &mut impl EventStore, writes: Vec<Write>) {
    let mut batch = Batch::default();
    let mut waiting = Vec::new();
    let mut flushes = Vec::new();
    let mut releases = Vec::new();
    let mut take_overs = Vec::new();
    let mut renew = false;
    for write in writes {
        match write {
            Write::Append(event, done) => {
                batch.appends.push(event);
                waiting.push(done);
            }
            Write::Reschedule(id, attempts, due) => batch.reschedules.push((id, attempts, due)),
            Write::Remove(id) => batch.removals.push(id),
            Write::Flush(done) => flushes.push(done),
            Write::TakeOver(functions, limit, done) => take_overs.push((functions, limit, done)),
            Write::Renew => renew = true,
            Write::Release(done) => releases.push(done),
        }
    }
    let appended = match store.commit(&batch) {
        Ok(keys) => Ok(keys),
        Err(whole) if batch.appends.is_empty() => {
            tracing::error!(
                "{whole}: {} retries and {} finished events not recorded; they run again at the next start",
                batch.reschedules.len(),
                batch.removals.len()
            );
            Ok(Vec::new())
        }
        Err(whole) => {
            let appended = store.append(&batch.appends);
            if appended.is_ok() {
                tracing::error!(
                    "{whole}: {} retries and {} finished events not recorded; they run again at the next start",
                    batch.reschedules.len(),
                    batch.removals.len()
                );
            }
            appended
        }
    };
    if let Err(e) = &appended {
        tracing::error!("{e}: {} accepted events refused", batch.appends.len());
    }
    match appended {
        Ok(keys) => answer_appends(waiting, keys),
        Err(e) => {
            for done in waiting {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
    if renew && let Err(e) = store.renew() {
        tracing::error!("renewing this server's leases: {e}");
    }
    for (functions, limit, done) in take_overs {
        let _ = done.send(store.take_over(&functions, limit));
    }
    for done in flushes {
        let _ = done.send(());
    }
    if !releases.is_empty()
        && let Err(e) = store.release()
    {
        tracing::error!("{e}: this server's events wait for their leases to lapse");
    }
    for done in releases {
        let _ = done.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_the_store_gave_no_key_is_told_so_and_the_others_get_theirs() {
        let (first, first_rx) = oneshot::channel();
        let (second, second_rx) = oneshot::channel();
        answer_appends(vec![first, second], vec![Some(1)]);
        assert_eq!(first_rx.blocking_recv().unwrap().unwrap(), Some(1));
        let error = second_rx.blocking_recv().unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "the event store writer: the store answered 1 keys for 2 events"
        );
    }
}
