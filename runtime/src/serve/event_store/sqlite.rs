//! The embedded event store: one SQLite database (`<state dir>/events.sqlite3`) in WAL mode
//! with `synchronous = FULL`, so a committed append survives a power loss as well as a crash.
//! SQLite is bundled (`rusqlite`'s `bundled` feature: Debian's library is older than the crate
//! wants). One table, queryable by function and due time, whose shape moves to PostgreSQL as
//! it is.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, params};

use super::{EventStore, StoreError, StoredEvent};

/// The store's file name in the state directory.
pub const FILE_NAME: &str = "events.sqlite3";

/// The table's version; a file of another is refused, naming both.
const SCHEMA_VERSION: i64 = 1;

/// An open store.
pub struct SqliteStore {
    connection: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in `state_dir`. A file that is not a database, is of
    /// another schema, or is locked by another lamina is refused, naming it.
    pub fn open(state_dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = state_dir.join(FILE_NAME);
        let err = |reason: String| StoreError {
            place: path.display().to_string(),
            reason,
        };
        let connection = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(e.to_string()))?;
        let setup = || -> rusqlite::Result<i64> {
            // Exclusive locking: a second lamina on the same state directory is refused at
            // once instead of the two running each other's events.
            connection.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS events (
                     request_id TEXT PRIMARY KEY,
                     function TEXT NOT NULL,
                     payload BLOB NOT NULL,
                     client_context TEXT,
                     trace_id TEXT,
                     accepted_ms INTEGER NOT NULL,
                     attempts INTEGER NOT NULL,
                     due_ms INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1);
                 COMMIT;",
            )?;
            connection.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
        };
        match setup() {
            Ok(SCHEMA_VERSION) => Ok(SqliteStore { connection, path }),
            Ok(other) => Err(err(format!(
                "schema version {other}, and this lamina reads version {SCHEMA_VERSION}"
            ))),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    || e.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                Err(err(
                    "in use by another lamina serve (one state directory serves one lamina; give \
                     this one its own --state-dir)"
                        .into(),
                ))
            }
            Err(e) => Err(err(format!(
                "{e} (not a lamina event store; move it aside to start with an empty queue)"
            ))),
        }
    }

    fn failed(&self, e: rusqlite::Error) -> StoreError {
        StoreError {
            place: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

impl EventStore for SqliteStore {
    fn append(&mut self, events: &[StoredEvent]) -> Result<(), StoreError> {
        let write = |c: &mut Connection| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (request_id, function, payload, client_context,
                     trace_id, accepted_ms, attempts, due_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for e in events {
                    insert.execute(params![
                        e.request_id,
                        e.function,
                        &e.payload[..],
                        e.client_context,
                        e.trace_id,
                        i64::try_from(e.accepted_ms).unwrap_or(i64::MAX),
                        e.attempts,
                        i64::try_from(e.due_ms).unwrap_or(i64::MAX),
                    ])?;
                }
            }
            tx.commit()
        };
        write(&mut self.connection).map_err(|e| self.failed(e))
    }

    fn reschedule(
        &mut self,
        request_id: &str,
        attempts: u32,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE events SET attempts = ?2, due_ms = ?3 WHERE request_id = ?1",
                params![
                    request_id,
                    attempts,
                    i64::try_from(due_ms).unwrap_or(i64::MAX)
                ],
            )
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    fn remove(&mut self, request_ids: &[String]) -> Result<(), StoreError> {
        let write = |c: &mut Connection| -> rusqlite::Result<()> {
            let tx = c.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM events WHERE request_id = ?1")?;
                for id in request_ids {
                    delete.execute([id])?;
                }
            }
            tx.commit()
        };
        write(&mut self.connection).map_err(|e| self.failed(e))
    }

    fn pending(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        let read = |c: &Connection| -> rusqlite::Result<Vec<StoredEvent>> {
            let mut query = c.prepare(
                "SELECT request_id, function, payload, client_context, trace_id, accepted_ms,
                 attempts, due_ms FROM events ORDER BY accepted_ms",
            )?;
            let rows = query.query_map([], |r| {
                Ok(StoredEvent {
                    request_id: r.get(0)?,
                    function: r.get(1)?,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    client_context: r.get(3)?,
                    trace_id: r.get(4)?,
                    accepted_ms: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                    attempts: r.get(6)?,
                    due_ms: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                })
            })?;
            rows.collect()
        };
        read(&self.connection).map_err(|e| self.failed(e))
    }
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
        }
    }

    #[test]
    fn what_is_appended_is_pending_until_removed_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path()).unwrap();
            store
                .append(&[event("a", 1), event("b", 2), event("c", 3)])
                .unwrap();
            store.reschedule("b", 1, 99).unwrap();
            store.remove(&["a".into()]).unwrap();
        }
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].request_id, "b");
        assert_eq!((pending[0].attempts, pending[0].due_ms), (1, 99));
        assert_eq!(pending[1], event("c", 3));
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
}
