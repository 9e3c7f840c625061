//! The shared event store: one PostgreSQL table that several `lamina serve` processes, on one
//! host or many, use as one queue (`[serve] queue = "postgres://…"`).
//!
//! Every event is *leased* by the server that runs it: the server that accepts an event holds
//! it from the start, renews its leases while it lives ([`EventStore::renew`]), and gives them
//! up when it stops. Events whose lease has lapsed (their server was killed) are taken over by
//! the others, each event by one of them: `SELECT … FOR UPDATE SKIP LOCKED` lets servers that
//! look at the same moment take different events instead of waiting on each other. In normal
//! operation every event runs once; an event that was running in a killed server runs again,
//! which is Lambda's at-least-once.
//!
//! Leases are measured on the database's clock, never a host's, so hosts whose clocks differ
//! cannot steal each other's events. The client is the synchronous `postgres` crate: the
//! store is driven by the [`Committer`](super::Committer)'s own thread, where blocking is the
//! point, and a lost connection is made again at the next write. TLS, when the URL asks for it
//! (`sslmode`, `sslrootcert`), is [`tls`]'s.

pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use postgres::{Client, Config, GenericClient, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::listing::{FunctionQueue, QueuedEvent, non_negative, summary_of};
use super::{EventKey, EventStore, StoreError, StoredEvent};

/// The table's version; a database holding another is refused, naming both.
const SCHEMA_VERSION: i64 = 1;

/// Now, in milliseconds since the Unix epoch, by the database's clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How long connecting may take before the server is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the shared queue.
pub struct PostgresStore {
    config: Config,
    /// `None`: plain connections.
    tls: Option<MakeRustlsConnect>,
    client: Option<Client>,
    /// The server, as errors name it: the URL without its password.
    place: String,
    /// This server's name on its leases; new at every start.
    owner: String,
    lease: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("place", &self.place)
            .field("owner", &self.owner)
            .finish()
    }
}

pub use crate::config::file::redacted;

impl PostgresStore {
    /// Connects to the database at `url` and makes the queue's table if it is not there.
    /// Events are leased for `lease` at a time. Blocks: call it outside the async runtime
    /// (the client runs one of its own).
    pub fn connect(url: &str, lease: Duration) -> Result<PostgresStore, StoreError> {
        let (config, tls, place) = configure(url, "lamina")?;
        let mut store = PostgresStore {
            config,
            tls,
            client: None,
            place,
            owner: uuid::Uuid::new_v4().to_string(),
            lease,
        };
        let version = store.with_client(|client| {
            let mut tx = client.transaction()?;
            // Two servers starting together would race to make the table.
            tx.execute("SELECT pg_advisory_xact_lock(7420161)", &[])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS lamina_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
                 CREATE TABLE IF NOT EXISTS lamina_events (
                     request_id TEXT PRIMARY KEY,
                     function TEXT NOT NULL,
                     payload BYTEA NOT NULL,
                     client_context TEXT,
                     trace_id TEXT,
                     accepted_ms BIGINT NOT NULL,
                     attempts INTEGER NOT NULL,
                     due_ms BIGINT NOT NULL,
                     owner TEXT,
                     lease_until_ms BIGINT NOT NULL DEFAULT 0
                 );
                 CREATE INDEX IF NOT EXISTS lamina_events_lease ON lamina_events (lease_until_ms, accepted_ms);
                 CREATE INDEX IF NOT EXISTS lamina_events_owner ON lamina_events (owner);
                 INSERT INTO lamina_meta (key, value) VALUES ('schema', 1) ON CONFLICT DO NOTHING;",
            )?;
            let version: i64 = tx
                .query_one("SELECT value FROM lamina_meta WHERE key = 'schema'", &[])?
                .get(0);
            tx.commit()?;
            Ok(version)
        })?;
        if version != SCHEMA_VERSION {
            return Err(store.error(format!(
                "the queue's table is of schema version {version}, and this lamina reads version {SCHEMA_VERSION}"
            )));
        }
        Ok(store)
    }

    /// This server's name on its leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn error(&self, reason: String) -> StoreError {
        StoreError {
            place: self.place.clone(),
            reason,
        }
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Runs `work` on the connection, connecting first if there is none (or it was lost).
    fn with_client<T>(
        &mut self,
        work: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(open(&self.config, self.tls.as_ref(), &self.place)?);
        }
        let client = self.client.as_mut().unwrap_or_else(|| unreachable!());
        let outcome = work(client);
        if client.is_closed() {
            // Made again at the next write.
            self.client = None;
        }
        outcome.map_err(|e| self.error(describe(&e)))
    }
}

/// The connection settings of `url` (TLS as it asks), as `application` shows in the server's
/// `pg_stat_activity`; and the server as errors name it, without the URL's password.
fn configure(
    url: &str,
    application: &str,
) -> Result<(Config, Option<MakeRustlsConnect>, String), StoreError> {
    let place = redacted(url);
    let tls::Connection { mut config, tls } = tls::parse(url).map_err(|e| StoreError {
        place: place.clone(),
        reason: e.to_string(),
    })?;
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name(application);
    Ok((config, tls, place))
}

/// A new connection to the server of `config`, over TLS when `tls` is given; an error names
/// `place` and says what to do about a certificate that was not trusted.
fn open(
    config: &Config,
    tls: Option<&MakeRustlsConnect>,
    place: &str,
) -> Result<Client, StoreError> {
    let connected = match tls {
        None => config.connect(NoTls),
        Some(tls) => config.connect(tls.clone()),
    };
    connected.map_err(|e| {
        let why = describe(&e);
        StoreError {
            place: place.to_owned(),
            reason: match tls::certificate_hint(&why) {
                Some(hint) => format!("cannot connect: {why} ({hint})"),
                None => format!("cannot connect: {why}"),
            },
        }
    })
}

/// A connection that only reads the shared queue: `lamina events ls`. It makes and changes
/// nothing, and a database without the queue's table holds no events. It counts what the
/// servers' leases hold as the embedded store's reader does: due (waiting or running), and
/// waiting for a retry due later.
pub struct PostgresReader {
    client: Client,
    place: String,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresReader({})", self.place)
    }
}

impl PostgresReader {
    /// Connects to the database at `url`. Blocks: call it outside an async runtime.
    pub fn connect(url: &str) -> Result<PostgresReader, StoreError> {
        let (config, tls, place) = configure(url, "lamina events")?;
        let client = open(&config, tls.as_ref(), &place)?;
        Ok(PostgresReader { client, place })
    }

    /// What the queue holds, per function (by name), at `now_ms`
    /// (as [`ReadOnlyStore::summary`](super::sqlite::ReadOnlyStore::summary) counts them).
    pub fn summary(&mut self, now_ms: u64) -> Result<Vec<FunctionQueue>, StoreError> {
        let rows = self.query(
            "SELECT function, due_ms > $1 AS later,
                    CASE WHEN due_ms > $1 THEN attempts ELSE 0 END AS retried,
                    COUNT(*), MIN(due_ms)
             FROM lamina_events GROUP BY 1, 2, 3 ORDER BY 1",
            &[&to_i64(now_ms)],
        )?;
        Ok(summary_of(rows.iter().map(|r| {
            (
                r.get(0),
                r.get(1),
                u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                r.get(3),
                r.get(4),
            )
        })))
    }

    /// The events of `function`, oldest first, without their payloads.
    pub fn list(&mut self, function: &str) -> Result<Vec<QueuedEvent>, StoreError> {
        let rows = self.query(
            "SELECT request_id, accepted_ms, attempts, due_ms, octet_length(payload)::bigint
             FROM lamina_events WHERE function = $1 ORDER BY accepted_ms, request_id",
            &[&function],
        )?;
        Ok(rows
            .iter()
            .map(|r| QueuedEvent {
                request_id: r.get(0),
                accepted_ms: non_negative(r.get(1)),
                attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                due_ms: non_negative(r.get(3)),
                payload_bytes: non_negative(r.get(4)),
            })
            .collect())
    }

    /// `sql`'s rows; none when no server has made the queue's table yet.
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, StoreError> {
        match self.client.query(sql, params) {
            Ok(rows) => Ok(rows),
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => {
                Ok(Vec::new())
            }
            Err(e) => Err(StoreError {
                place: self.place.clone(),
                reason: describe(&e),
            }),
        }
    }
}

/// A PostgreSQL error with what the server said, if it said anything.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => tls::with_sources(e),
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn event_of(row: &postgres::Row) -> StoredEvent {
    let payload: Vec<u8> = row.get(2);
    StoredEvent {
        request_id: row.get(0),
        function: row.get(1),
        payload: Bytes::from(payload),
        client_context: row.get(3),
        trace_id: row.get(4),
        accepted_ms: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
        attempts: u32::try_from(row.get::<_, i32>(6)).unwrap_or(0),
        due_ms: u64::try_from(row.get::<_, i64>(7)).unwrap_or(0),
        // Keyed by request id alone: lamina's servers share no sequence.
        seq: None,
    }
}

/// Inserts `events`, leased by `owner`: one statement for the whole batch, the arrays
/// unnested into rows. The server that accepts an event runs it.
fn insert(
    client: &mut impl GenericClient,
    events: &[StoredEvent],
    owner: &str,
    lease_ms: i64,
) -> Result<(), postgres::Error> {
    let ids: Vec<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    let functions: Vec<&str> = events.iter().map(|e| e.function.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| &e.payload[..]).collect();
    let contexts: Vec<Option<&str>> = events.iter().map(|e| e.client_context.as_deref()).collect();
    let traces: Vec<Option<&str>> = events.iter().map(|e| e.trace_id.as_deref()).collect();
    let accepted: Vec<i64> = events.iter().map(|e| to_i64(e.accepted_ms)).collect();
    let attempts: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.attempts).unwrap_or(i32::MAX))
        .collect();
    let due: Vec<i64> = events.iter().map(|e| to_i64(e.due_ms)).collect();
    let sql = format!(
        "INSERT INTO lamina_events (request_id, function, payload, client_context, trace_id,
             accepted_ms, attempts, due_ms, owner, lease_until_ms)
         SELECT r, f, p, c, t, a, n, d, $9, {NOW_MS} + $10
         FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[],
                     $6::int8[], $7::int4[], $8::int8[]) AS u(r, f, p, c, t, a, n, d)
         ON CONFLICT (request_id) DO NOTHING"
    );
    client
        .execute(
            &sql,
            &[
                &ids, &functions, &payloads, &contexts, &traces, &accepted, &attempts, &due,
                &owner, &lease_ms,
            ],
        )
        .map(drop)
}

/// The request ids of `events`: this store's only key.
fn request_ids(events: &[EventKey]) -> Vec<&str> {
    events.iter().map(|e| e.request_id.as_str()).collect()
}

fn reschedule(
    client: &mut impl GenericClient,
    request_id: &str,
    attempts: u32,
    due_ms: u64,
) -> Result<(), postgres::Error> {
    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
    let due = to_i64(due_ms);
    client
        .execute(
            "UPDATE lamina_events SET attempts = $2, due_ms = $3 WHERE request_id = $1",
            &[&request_id, &attempts, &due],
        )
        .map(drop)
}

impl EventStore for PostgresStore {
    fn commit(&mut self, batch: &super::Batch) -> Result<Vec<Option<i64>>, StoreError> {
        let owner = self.owner.clone();
        let lease = self.lease_ms();
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            if !batch.appends.is_empty() {
                insert(&mut tx, &batch.appends, &owner, lease)?;
            }
            for (event, attempts, due_ms) in &batch.reschedules {
                reschedule(&mut tx, &event.request_id, *attempts, *due_ms)?;
            }
            if !batch.removals.is_empty() {
                tx.execute(
                    "DELETE FROM lamina_events WHERE request_id = ANY($1)",
                    &[&request_ids(&batch.removals)],
                )?;
            }
            tx.commit()
        })?;
        Ok(vec![None; batch.appends.len()])
    }

    fn append(&mut self, events: &[StoredEvent]) -> Result<Vec<Option<i64>>, StoreError> {
        let owner = self.owner.clone();
        let lease = self.lease_ms();
        self.with_client(|client| insert(client, events, &owner, lease))?;
        Ok(vec![None; events.len()])
    }

    fn reschedule(
        &mut self,
        event: &EventKey,
        attempts: u32,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_client(|client| reschedule(client, &event.request_id, attempts, due_ms))
    }

    fn remove(&mut self, events: &[EventKey]) -> Result<(), StoreError> {
        self.with_client(|client| {
            client.execute(
                "DELETE FROM lamina_events WHERE request_id = ANY($1)",
                &[&request_ids(events)],
            )
        })
        .map(drop)
    }

    fn pending(&mut self) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(Vec::new())
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn take_over(
        &mut self,
        functions: &[String],
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let owner = self.owner.clone();
        let lease = self.lease_ms();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "UPDATE lamina_events SET owner = $1, lease_until_ms = {NOW_MS} + $2
             WHERE request_id IN (
                 SELECT request_id FROM lamina_events
                 WHERE lease_until_ms < {NOW_MS} AND function = ANY($3)
                 ORDER BY accepted_ms
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING request_id, function, payload, client_context, trace_id, accepted_ms,
                       attempts, due_ms"
        );
        let rows =
            self.with_client(|client| client.query(&sql, &[&owner, &lease, &functions, &limit]))?;
        let mut events: Vec<StoredEvent> = rows.iter().map(event_of).collect();
        events.sort_by_key(|e| e.accepted_ms);
        Ok(events)
    }

    fn renew(&mut self) -> Result<(), StoreError> {
        let owner = self.owner.clone();
        let lease = self.lease_ms();
        let sql =
            format!("UPDATE lamina_events SET lease_until_ms = {NOW_MS} + $2 WHERE owner = $1");
        self.with_client(|client| client.execute(&sql, &[&owner, &lease]))
            .map(drop)
    }

    fn release(&mut self) -> Result<(), StoreError> {
        let owner = self.owner.clone();
        self.with_client(|client| {
            client.execute(
                "UPDATE lamina_events SET owner = NULL, lease_until_ms = 0 WHERE owner = $1",
                &[&owner],
            )
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_log() {
        assert_eq!(
            redacted("postgres://lamina:s3cret@db.example:5432/queue"),
            "postgres://lamina@db.example:5432/queue"
        );
        assert_eq!(
            redacted("postgres://db.example/queue"),
            "postgres://db.example/queue"
        );
    }

    #[test]
    fn a_bad_url_is_refused_naming_it() {
        let e = PostgresStore::connect("postgres://u:pw@host:notaport/db", Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.place, "postgres://u@host:notaport/db");
        assert!(e.reason.contains("not a PostgreSQL connection URL"), "{e}");
    }

    #[test]
    fn an_unreachable_server_is_named() {
        // Port 1 on loopback: nothing listens there.
        let e = PostgresStore::connect("postgres://u@127.0.0.1:1/db", Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.place, "postgres://u@127.0.0.1:1/db");
        assert!(e.reason.starts_with("cannot connect"), "{e}");
    }
}
