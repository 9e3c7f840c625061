//! The embedded event store: one SQLite database (`<state dir>/events.sqlite3`) in WAL mode
//! with `synchronous = FULL`, so a committed append survives a power loss as well as a crash.
//! SQLite is bundled (`rusqlite`'s `bundled` feature: Debian's library is older than the crate
//! wants). One table, queryable by function and due time, whose shape moves to PostgreSQL as
//! it is.
//!
//! The table is keyed by a sequence number in accept order, not by request id: inserts and
//! the removals that follow them in about the same order then touch the B-tree's last pages
//! instead of one random page each (a request id is a random UUID), which is most of what a
//! commit costs. An append answers each event's sequence number, which the queue keeps with
//! the event and names again in its retries and its removal ([`EventKey`]; design note 005,
//! "Keys").
//!
//! One writer, many readers: the writer ([`SqliteStore`], a `lamina serve` or `lamina events
//! purge`) holds an exclusive `flock` on `events.sqlite3.lock` beside the database for as long
//! as the store is open, so a second one is refused at once; readers ([`ReadOnlyStore`],
//! `lamina events ls`) take no such lock and read beside it, as WAL lets them. The queries
//! behind `lamina events` ([`SqliteStore::summary`], [`ReadOnlyStore::list`],
//! [`SqliteStore::purge`]) are here too.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, params};

use super::listing::{FunctionQueue, QueuedEvent, non_negative, summary_of};
use super::{EventKey, EventStore, StoreError, StoredEvent};

/// The store's file name in the state directory.
pub const FILE_NAME: &str = "events.sqlite3";

/// The writer's lock file beside the database: whoever writes the store holds an exclusive
/// `flock` on it while the store is open (the kernel lets it go when the process ends, even by
/// `kill -9`).
pub const LOCK_FILE_NAME: &str = "events.sqlite3.lock";

/// How long a statement waits for another connection's brief locks (a reader starting up, a
/// checkpoint) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store could not be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the store: its lock file, or (a lamina of before the lock file)
    /// the database itself. Names the database.
    #[error(
        "the event store {}: in use by another lamina serve (or a `lamina events purge` under \
         way; one state directory serves one lamina; give this one its own --state-dir)",
        .0.display()
    )]
    InUse(PathBuf),
    /// Anything else, naming the file.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The table's version; a file of a later one is refused, naming both; version 1 (keyed by
/// request id) is moved to this one when a writer opens it.
const SCHEMA_VERSION: i64 = 2;

/// The events table, version 2. `seq` is SQLite's rowid: the largest so far plus one.
const CREATE_EVENTS: &str = "CREATE TABLE IF NOT EXISTS events (
     seq INTEGER PRIMARY KEY,
     request_id TEXT NOT NULL,
     function TEXT NOT NULL,
     payload BLOB NOT NULL,
     client_context TEXT,
     trace_id TEXT,
     accepted_ms INTEGER NOT NULL,
     attempts INTEGER NOT NULL,
     due_ms INTEGER NOT NULL
 )";

/// Moves a version 1 table (`request_id` its key, `WITHOUT ROWID`) to version 2 (made by
/// [`CREATE_EVENTS`]: the old table is renamed first), in accept order, in one transaction.
const MIGRATE_FROM_1: &str = "INSERT INTO events (request_id, function, payload,
         client_context, trace_id, accepted_ms, attempts, due_ms)
         SELECT request_id, function, payload, client_context, trace_id, accepted_ms,
         attempts, due_ms FROM events_v1 ORDER BY accepted_ms, request_id;
     DROP TABLE events_v1;
     UPDATE meta SET value = 2 WHERE key = 'schema';";

/// An open store, and its writer's lock, held until it is dropped.
pub struct SqliteStore {
    connection: Connection,
    path: PathBuf,
    _lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in `state_dir` for writing, taking its lock. A store
    /// another process holds is refused at once ([`OpenError::InUse`]), as is a file that is not
    /// a database or is of another schema, naming it.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, OpenError> {
        let path = state_dir.join(FILE_NAME);
        let err = |reason: String| StoreError {
            place: path.display().to_string(),
            reason,
        };
        // The lock, before the database is touched: a second lamina on the same state
        // directory is refused at once instead of the two running each other's events. SQLite's
        // own `locking_mode = EXCLUSIVE` would refuse it too, but it keeps every reader out
        // (`lamina events ls` beside a running server), and the lock file does not.
        let lock_path = state_dir.join(LOCK_FILE_NAME);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open its lock {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OpenError::InUse(path)),
            Err(TryLockError::Error(e)) => {
                return Err(err(format!("cannot lock {}: {e}", lock_path.display())).into());
            }
        }
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(e.to_string()))?;
        let setup = || -> rusqlite::Result<i64> {
            // A reader that has just opened the database may hold a lock for a moment.
            connection.busy_timeout(BUSY_TIMEOUT)?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            // A new file gets version 2 at once; an existing one keeps its table and version.
            connection.execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 {CREATE_EVENTS};
                 INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', {SCHEMA_VERSION});
                 COMMIT;"
            ))?;
            let version =
                connection.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get(0)
                })?;
            if version == 1 {
                connection.execute_batch(&format!(
                    "BEGIN IMMEDIATE; ALTER TABLE events RENAME TO events_v1; {CREATE_EVENTS}; \
                     {MIGRATE_FROM_1} COMMIT;"
                ))?;
                return Ok(SCHEMA_VERSION);
            }
            Ok(version)
        };
        match setup() {
            Ok(SCHEMA_VERSION) => Ok(SqliteStore {
                connection,
                path,
                _lock: lock,
            }),
            Ok(other) => Err(err(format!(
                "schema version {other}, and this lamina reads version {SCHEMA_VERSION}"
            ))
            .into()),
            // A lamina of before the lock file holds the database in SQLite's exclusive mode.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    || e.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                Err(OpenError::InUse(path))
            }
            Err(e) => Err(err(format!(
                "{e} (not a lamina event store; move it aside to start with an empty queue)"
            ))
            .into()),
        }
    }

    /// What the store holds, per function, at `now_ms` ([`ReadOnlyStore::summary`]).
    pub fn summary(&self, now_ms: u64) -> Result<Vec<FunctionQueue>, StoreError> {
        summary(&self.connection, now_ms).map_err(|e| self.failed(e))
    }

    /// Deletes the events of `function` (or every event) and returns how many there were.
    /// Only a writer may: a server holding the store would run them all the same.
    pub fn purge(&mut self, function: Option<&str>) -> Result<u64, StoreError> {
        self.connection
            .execute(
                "DELETE FROM events WHERE ?1 IS NULL OR function = ?1",
                [function],
            )
            .map(|n| n as u64)
            .map_err(|e| self.failed(e))
    }

    fn failed(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            place: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

const INSERT: &str = "INSERT INTO events (request_id, function, payload, client_context,
     trace_id, accepted_ms, attempts, due_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
// By `seq`, and the request id as well: should a sequence number ever be reused (SQLite may
// give a deleted last row's to the next insert), the wrong event is not touched.
const RESCHEDULE: &str =
    "UPDATE events SET attempts = ?3, due_ms = ?4 WHERE seq = ?1 AND request_id = ?2";
const DELETE: &str = "DELETE FROM events WHERE seq = ?1 AND request_id = ?2";
// An event named without its `seq` (none should be): found the slow way.
const RESCHEDULE_BY_ID: &str =
    "UPDATE events SET attempts = ?3, due_ms = ?4 WHERE request_id = ?2 AND ?1 IS NULL";
const DELETE_BY_ID: &str = "DELETE FROM events WHERE request_id = ?2 AND ?1 IS NULL";

/// An event's values in [`INSERT`]'s order.
#[allow(
    clippy::type_complexity,
    reason = "the columns, as rusqlite binds a tuple"
)]
fn insert_params(
    e: &StoredEvent,
) -> (&str, &str, &[u8], Option<&str>, Option<&str>, i64, u32, i64) {
    (
        &e.request_id,
        &e.function,
        &e.payload[..],
        e.client_context.as_deref(),
        e.trace_id.as_deref(),
        i64::try_from(e.accepted_ms).unwrap_or(i64::MAX),
        e.attempts,
        i64::try_from(e.due_ms).unwrap_or(i64::MAX),
    )
}

impl EventStore for SqliteStore {
    fn commit(&mut self, batch: &super::Batch) -> Result<Vec<Option<i64>>, StoreError> {
        let write = |c: &mut Connection| -> rusqlite::Result<Vec<Option<i64>>> {
            let tx = c.transaction()?;
            let seqs = insert(&tx, &batch.appends)?;
            for (event, attempts, due_ms) in &batch.reschedules {
                reschedule(&tx, event, *attempts, *due_ms)?;
            }
            remove(&tx, &batch.removals)?;
            tx.commit()?;
            Ok(seqs)
        };
        write(&mut self.connection).map_err(|e| self.failed(e))
    }

    fn append(&mut self, events: &[StoredEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        let write = |c: &mut Connection| -> rusqlite::Result<Vec<Option<i64>>> {
            let tx = c.transaction()?;
            let seqs = insert(&tx, events)?;
            tx.commit()?;
            Ok(seqs)
        };
        write(&mut self.connection).map_err(|e| self.failed(e))
    }

    fn reschedule(
        &mut self,
        event: &EventKey,
        attempts: u32,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        reschedule(&self.connection, event, attempts, due_ms).map_err(|e| self.failed(e))
    }

    fn remove(&mut self, events: &[EventKey]) -> Result<(), StoreError> {
        let write = |c: &mut Connection| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            remove(&tx, events)?;
            tx.commit()
        };
        write(&mut self.connection).map_err(|e| self.failed(e))
    }

    fn pending(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        let read = |c: &Connection| -> rusqlite::Result<Vec<StoredEvent>> {
            let mut query = c.prepare(
                "SELECT seq, request_id, function, payload, client_context, trace_id,
                 accepted_ms, attempts, due_ms FROM events ORDER BY seq",
            )?;
            let rows = query.query_map([], |r| {
                Ok(StoredEvent {
                    seq: Some(r.get(0)?),
                    request_id: r.get(1)?,
                    function: r.get(2)?,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(3)?),
                    client_context: r.get(4)?,
                    trace_id: r.get(5)?,
                    accepted_ms: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                    attempts: r.get(7)?,
                    due_ms: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                })
            })?;
            rows.collect()
        };
        read(&self.connection).map_err(|e| self.failed(e))
    }
}

/// Inserts `events` in order, returning the `seq` each was given.
fn insert(c: &Connection, events: &[StoredEvent]) -> rusqlite::Result<Vec<Option<i64>>> {
    let mut insert = c.prepare_cached(INSERT)?;
    events
        .iter()
        .map(|e| insert.insert(insert_params(e)).map(Some))
        .collect()
}

fn reschedule(
    c: &Connection,
    event: &EventKey,
    attempts: u32,
    due_ms: u64,
) -> rusqlite::Result<()> {
    let mut update = c.prepare_cached(match event.seq {
        Some(_) => RESCHEDULE,
        None => RESCHEDULE_BY_ID,
    })?;
    update.execute(params![
        event.seq,
        event.request_id,
        attempts,
        i64::try_from(due_ms).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// Deletes `events`.
fn remove(c: &Connection, events: &[EventKey]) -> rusqlite::Result<()> {
    for event in events {
        let mut delete = c.prepare_cached(match event.seq {
            Some(_) => DELETE,
            None => DELETE_BY_ID,
        })?;
        delete.execute(params![event.seq, event.request_id])?;
    }
    Ok(())
}

/// A store opened to be read only, beside the writer that may have it open: `lamina events
/// ls`. It takes no lock, and never creates or changes the database.
pub struct ReadOnlyStore {
    connection: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ReadOnlyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyStore")
            .field("path", &self.path)
            .finish()
    }
}

impl ReadOnlyStore {
    /// Opens the store in `state_dir` to read it; `None` if there is none.
    pub fn open(state_dir: &Path) -> Result<Option<ReadOnlyStore>, StoreError> {
        let path = state_dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let err = |e: rusqlite::Error| StoreError {
            place: path.display().to_string(),
            reason: e.to_string(),
        };
        // Read-only, yet SQLite may make the `-shm` and `-wal` files of a database no
        // writer has open (the state directory is lamina's user's): what WAL readers need.
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        let schema: i64 = connection
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .map_err(|e| StoreError {
                place: path.display().to_string(),
                reason: format!("{e} (not a lamina event store)"),
            })?;
        if schema != SCHEMA_VERSION {
            return Err(StoreError {
                place: path.display().to_string(),
                reason: format!(
                    "schema version {schema}, and this lamina reads version {SCHEMA_VERSION}"
                ),
            });
        }
        Ok(Some(ReadOnlyStore { connection, path }))
    }

    /// What the store holds, per function (by name), at `now_ms`: the events due (queued or
    /// running), and those waiting for a retry due later, by the attempts made so far.
    pub fn summary(&self, now_ms: u64) -> Result<Vec<FunctionQueue>, StoreError> {
        summary(&self.connection, now_ms).map_err(|e| self.failed(e))
    }

    /// The events of `function`, oldest first, without their payloads.
    pub fn list(&self, function: &str) -> Result<Vec<QueuedEvent>, StoreError> {
        list(&self.connection, function).map_err(|e| self.failed(e))
    }

    fn failed(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            place: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

fn summary(c: &Connection, now_ms: u64) -> rusqlite::Result<Vec<FunctionQueue>> {
    // One scan, grouped: a function's due events in one row, its later ones by attempts.
    let mut query = c.prepare(
        "SELECT function, due_ms > ?1 AS later, attempts, COUNT(*), MIN(due_ms) FROM events
         GROUP BY function, later, CASE WHEN due_ms > ?1 THEN attempts END ORDER BY function",
    )?;
    let rows = query.query_map([i64::try_from(now_ms).unwrap_or(i64::MAX)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    Ok(summary_of(rows.collect::<rusqlite::Result<Vec<_>>>()?))
}

fn list(c: &Connection, function: &str) -> rusqlite::Result<Vec<QueuedEvent>> {
    let mut query = c.prepare(
        "SELECT request_id, accepted_ms, attempts, due_ms, length(payload) FROM events
         WHERE function = ?1 ORDER BY seq",
    )?;
    let rows = query.query_map([function], |r| {
        Ok(QueuedEvent {
            request_id: r.get(0)?,
            accepted_ms: non_negative(r.get(1)?),
            attempts: r.get(2)?,
            due_ms: non_negative(r.get(3)?),
            payload_bytes: non_negative(r.get(4)?),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, accepted_ms: u64) -> StoredEvent {
        StoredEvent {
            request_id: id.into(),
            function: "f".into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            client_context: Some("{}".into()),
            trace_id: None,
            accepted_ms,
            attempts: 0,
            due_ms: 0,
            seq: None,
        }
    }

    #[test]
    fn what_is_appended_is_pending_until_removed_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let seqs = {
            let mut store = SqliteStore::open(dir.path()).unwrap();
            let seqs = store
                .append(&[event("a", 1), event("b", 2), event("c", 3)])
                .unwrap();
            assert!(
                seqs.iter().all(Option::is_some) && seqs.is_sorted(),
                "in accept order: {seqs:?}"
            );
            store
                .reschedule(&EventKey::new("b", seqs[1]), 1, 99)
                .unwrap();
            store.remove(&[EventKey::new("a", seqs[0])]).unwrap();
            seqs
        };
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].key(), EventKey::new("b", seqs[1]));
        assert_eq!((pending[0].attempts, pending[0].due_ms), (1, 99));
        assert_eq!(
            pending[1],
            StoredEvent {
                seq: seqs[2],
                ..event("c", 3)
            }
        );
    }

    #[test]
    fn a_version_1_store_is_moved_to_version_2_keeping_its_events_in_accept_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE events (request_id TEXT PRIMARY KEY, function TEXT NOT NULL,
                     payload BLOB NOT NULL, client_context TEXT, trace_id TEXT,
                     accepted_ms INTEGER NOT NULL, attempts INTEGER NOT NULL,
                     due_ms INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('schema', 1);
                 INSERT INTO events VALUES ('z-first', 'f', X'7B7D', NULL, 'Root=1', 1, 2, 77);
                 INSERT INTO events VALUES ('a-second', 'f', X'7B7D', '{}', NULL, 2, 0, 0);",
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let pending = store.pending().unwrap();
        let ids: Vec<_> = pending.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(ids, ["z-first", "a-second"]);
        assert_eq!(pending[0].trace_id.as_deref(), Some("Root=1"));
        assert_eq!((pending[0].attempts, pending[0].due_ms), (2, 77));
        store.remove(&[pending[0].key()]).unwrap();
        drop(store);
        let reader = ReadOnlyStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(reader.list("f").unwrap().len(), 1);
    }

    #[test]
    fn a_removal_or_retry_by_a_reused_sequence_number_never_touches_another_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let seqs = store.append(&[event("a", 1), event("b", 2)]).unwrap();
        // `b` gone behind the queue's back (a purge): its seq may be given to the next insert.
        store
            .connection
            .execute("DELETE FROM events WHERE request_id = 'b'", [])
            .unwrap();
        let c = store.append(&[event("c", 3)]).unwrap();
        assert_eq!(c[0], seqs[1], "SQLite reused the last rowid");
        store.remove(&[EventKey::new("b", seqs[1])]).unwrap();
        store
            .reschedule(&EventKey::new("b", seqs[1]), 2, 99)
            .unwrap();
        let pending = store.pending().unwrap();
        let ids: Vec<_> = pending.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(
            (pending[1].attempts, pending[1].due_ms),
            (0, 0),
            "c untouched"
        );
    }

    #[test]
    fn a_batch_appends_then_retries_and_removes_by_seq_or_else_by_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let seqs = store
            .append(&[event("kept", 1), event("retried", 2), event("done", 3)])
            .unwrap();
        let batch = crate::serve::event_store::Batch {
            appends: vec![event("new", 4), event("newer", 5)],
            reschedules: vec![(EventKey::new("retried", seqs[1]), 1, 50)],
            // One named without its seq (none should be): found by request id all the same.
            removals: vec![EventKey::new("done", None), EventKey::new("kept", seqs[0])],
        };
        let appended = store.commit(&batch).unwrap();
        assert_eq!(appended.len(), 2);
        assert!(
            appended[0] > seqs[2] && appended[1] > appended[0],
            "{appended:?}"
        );
        let pending = store.pending().unwrap();
        let keys: Vec<_> = pending.iter().map(StoredEvent::key).collect();
        assert_eq!(
            keys,
            [
                EventKey::new("retried", seqs[1]),
                EventKey::new("new", appended[0]),
                EventKey::new("newer", appended[1])
            ]
        );
        assert_eq!((pending[0].attempts, pending[0].due_ms), (1, 50));
    }

    #[test]
    fn a_second_lamina_and_a_file_that_is_no_store_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SqliteStore::open(dir.path()).unwrap();
        let second = SqliteStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            second.contains(FILE_NAME) && second.contains("another lamina serve"),
            "{second}"
        );
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join(FILE_NAME),
            b"not a database at all, just text",
        )
        .unwrap();
        let err = SqliteStore::open(other.path()).unwrap_err().to_string();
        assert!(
            err.contains(FILE_NAME) && err.contains("move it aside"),
            "{err}"
        );
    }

    #[test]
    fn the_lock_file_alone_refuses_a_writer_and_is_let_go_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        // Another process's lock, as `flock` sees it (a second open file description).
        let held = File::create(dir.path().join(LOCK_FILE_NAME)).unwrap();
        held.lock().unwrap();
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(OpenError::InUse(path)) if path == dir.path().join(FILE_NAME)
        ));
        drop(held);
        let first = SqliteStore::open(dir.path()).unwrap();
        drop(first);
        SqliteStore::open(dir.path()).unwrap();
    }

    #[test]
    fn a_reader_reads_beside_the_writer_and_after_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReadOnlyStore::open(dir.path()).unwrap().is_none());
        assert!(
            !dir.path().join(FILE_NAME).exists(),
            "a reader creates nothing"
        );
        let mut writer = SqliteStore::open(dir.path()).unwrap();
        writer.append(&[event("a", 1)]).unwrap();
        let reader = ReadOnlyStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(reader.list("f").unwrap().len(), 1);
        // Written while the reader is open, with the writer still holding the store.
        writer.append(&[event("b", 2)]).unwrap();
        assert_eq!(reader.list("f").unwrap().len(), 2);
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(OpenError::InUse(_))
        ));
        drop(reader);
        drop(writer);
        // No writer: its last close checkpointed and removed the WAL.
        let reader = ReadOnlyStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(reader.list("f").unwrap().len(), 2);
        // A reader does not hold the store against a writer.
        let mut writer = SqliteStore::open(dir.path()).unwrap();
        let a = writer.pending().unwrap().remove(0);
        assert_eq!(a.request_id, "a");
        writer.remove(&[a.key()]).unwrap();
        assert_eq!(reader.list("f").unwrap().len(), 1);
        let stranger = tempfile::tempdir().unwrap();
        std::fs::write(stranger.path().join(FILE_NAME), b"just text").unwrap();
        let err = ReadOnlyStore::open(stranger.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(FILE_NAME) && err.contains("not a lamina event store"),
            "{err}"
        );
    }

    #[test]
    fn summary_counts_due_and_later_events_by_function_and_attempts_and_purge_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let of = |function: &str, id: &str, attempts: u32, due_ms: u64| StoredEvent {
            function: function.into(),
            attempts,
            due_ms,
            ..event(id, 10)
        };
        store
            .append(&[
                of("f", "due", 0, 0),
                of("f", "retry-due", 1, 500),
                of("f", "later-1", 1, 5_000),
                of("f", "later-1b", 1, 3_000),
                of("f", "later-2", 2, 9_000),
                of("g", "g1", 0, 0),
            ])
            .unwrap();
        let summary = store.summary(1_000).unwrap();
        assert_eq!(
            summary,
            vec![
                FunctionQueue {
                    function: "f".into(),
                    queued: 2,
                    retrying_by_attempts: [(1, 2), (2, 1)].into(),
                    next_retry_ms: Some(3_000),
                },
                FunctionQueue {
                    function: "g".into(),
                    queued: 1,
                    ..FunctionQueue::default()
                },
            ]
        );
        assert_eq!(summary[0].retrying(), 3);
        let reader = ReadOnlyStore::open(dir.path()).unwrap().unwrap();
        assert_eq!(reader.summary(1_000).unwrap(), summary);
        let listed = reader.list("f").unwrap();
        assert_eq!(listed.len(), 5);
        // In accept order.
        assert_eq!(
            listed[2],
            QueuedEvent {
                request_id: "later-1".into(),
                accepted_ms: 10,
                attempts: 1,
                due_ms: 5_000,
                payload_bytes: 7,
            }
        );
        assert!(reader.list("nobody").unwrap().is_empty());
        assert_eq!(store.purge(Some("g")).unwrap(), 1);
        assert_eq!(store.summary(1_000).unwrap().len(), 1);
        assert_eq!(store.purge(None).unwrap(), 5);
        assert!(store.pending().unwrap().is_empty());
    }
}
