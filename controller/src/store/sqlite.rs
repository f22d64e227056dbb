//! [`Store`] on an embedded SQLite file (WAL), with versioned migrations.

use std::collections::HashMap;
use std::path::Path;

use leasegate_fleet::Secret;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Cordon, Intent, IntentKind, LeaseRecord, ProviderHistory, Step, Store, StoreError};
use crate::market::{BidId, Dseq};

/// Each entry moves the schema one version up; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: intents, leases, provider history, counters.
    "CREATE TABLE intents (
        id TEXT PRIMARY KEY,
        pool TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        dseq TEXT,
        manifest TEXT,
        bid TEXT,
        region TEXT,
        replica_key TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        amount_usd REAL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        step_ms INTEGER NOT NULL
    );
    CREATE INDEX intents_state ON intents(state);
    CREATE TABLE leases (
        dseq TEXT PRIMARY KEY,
        intent_id TEXT NOT NULL,
        pool TEXT NOT NULL,
        provider TEXT NOT NULL,
        region TEXT NOT NULL,
        country TEXT,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        audited INTEGER NOT NULL,
        uptime REAL NOT NULL,
        price_usd_per_hour REAL NOT NULL,
        url TEXT,
        replica_key TEXT,
        state TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        ready_ms INTEGER,
        closed_ms INTEGER,
        close_reason TEXT
    );
    CREATE TABLE provider_history (
        provider TEXT PRIMARY KEY,
        successes INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 2: providers cordoned by the operator.
    "CREATE TABLE cordons (
        provider TEXT PRIMARY KEY,
        reason TEXT,
        since_ms INTEGER NOT NULL
    );",
];

/// SQLite behind a short-held lock: every call is a few statements.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (or creates) the file and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // WAL: readers never block the writer; NORMAL sync is durable
        // across process crashes, which is what intents must survive.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            [],
        )?;
        let current: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [version],
            )?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))?)
    }
}

fn kind_str(k: IntentKind) -> &'static str {
    match k {
        IntentKind::Acquire => "acquire",
        IntentKind::Close => "close",
        IntentKind::Deposit => "deposit",
    }
}

fn corrupt(what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(StoreError::Corrupt(what)),
    )
}

fn intent_from_row(r: &Row<'_>) -> rusqlite::Result<Intent> {
    let kind: String = r.get("kind")?;
    let kind = match kind.as_str() {
        "acquire" => IntentKind::Acquire,
        "close" => IntentKind::Close,
        "deposit" => IntentKind::Deposit,
        other => return Err(corrupt(format!("intent kind {other}"))),
    };
    let state: String = r.get("state")?;
    let step = Step::parse(&state).ok_or_else(|| corrupt(format!("intent state {state}")))?;
    let bid: Option<String> = r.get("bid")?;
    let bid = match bid {
        Some(json) => {
            Some(serde_json::from_str::<BidId>(&json).map_err(|e| corrupt(format!("bid: {e}")))?)
        }
        None => None,
    };
    Ok(Intent {
        id: r.get("id")?,
        pool: r.get("pool")?,
        kind,
        step,
        dseq: r.get::<_, Option<String>>("dseq")?.map(Dseq),
        manifest: r.get::<_, Option<String>>("manifest")?.map(Secret::new),
        bid,
        region: r.get("region")?,
        replica_key: r.get::<_, Option<String>>("replica_key")?.map(Secret::new),
        attempts: r.get("attempts")?,
        reason: r.get("reason")?,
        amount_usd: r.get("amount_usd")?,
        created_ms: r.get::<_, i64>("created_ms")? as u64,
        updated_ms: r.get::<_, i64>("updated_ms")? as u64,
        step_ms: r.get::<_, i64>("step_ms")? as u64,
    })
}

fn lease_from_row(r: &Row<'_>) -> rusqlite::Result<LeaseRecord> {
    Ok(LeaseRecord {
        dseq: Dseq(r.get("dseq")?),
        intent_id: r.get("intent_id")?,
        pool: r.get("pool")?,
        provider: r.get("provider")?,
        region: r.get("region")?,
        country: r.get("country")?,
        lat: r.get("lat")?,
        lon: r.get("lon")?,
        audited: r.get("audited")?,
        uptime: r.get("uptime")?,
        price_usd_per_hour: r.get("price_usd_per_hour")?,
        url: r.get("url")?,
        replica_key: r.get::<_, Option<String>>("replica_key")?.map(Secret::new),
        state: r.get("state")?,
        created_ms: r.get::<_, i64>("created_ms")? as u64,
        ready_ms: r.get::<_, Option<i64>>("ready_ms")?.map(|v| v as u64),
        closed_ms: r.get::<_, Option<i64>>("closed_ms")?.map(|v| v as u64),
        close_reason: r.get("close_reason")?,
    })
}

impl Store for SqliteStore {
    fn save_intent(&self, i: &Intent) -> Result<(), StoreError> {
        let bid = match &i.bid {
            Some(b) => {
                Some(serde_json::to_string(b).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO intents (id, pool, kind, state, dseq, manifest, bid, region,
                replica_key, attempts, reason, amount_usd, created_ms, updated_ms, step_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                i.id,
                i.pool,
                kind_str(i.kind),
                i.step.as_str(),
                i.dseq.as_ref().map(|d| d.0.as_str()),
                i.manifest.as_ref().map(Secret::expose),
                bid,
                i.region,
                i.replica_key.as_ref().map(Secret::expose),
                i.attempts,
                i.reason,
                i.amount_usd,
                i.created_ms as i64,
                i.updated_ms as i64,
                i.step_ms as i64,
            ],
        )?;
        Ok(())
    }

    fn intents(&self, all: bool) -> Result<Vec<Intent>, StoreError> {
        let conn = self.conn.lock();
        let sql = if all {
            "SELECT * FROM intents ORDER BY created_ms, id"
        } else {
            "SELECT * FROM intents WHERE state NOT IN ('done', 'failed') ORDER BY created_ms, id"
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], intent_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_lease(&self, l: &LeaseRecord) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT OR REPLACE INTO leases (dseq, intent_id, pool, provider, region, country, lat,
                lon, audited, uptime, price_usd_per_hour, url, replica_key, state, created_ms,
                ready_ms, closed_ms, close_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18)",
            params![
                l.dseq.0,
                l.intent_id,
                l.pool,
                l.provider,
                l.region,
                l.country,
                l.lat,
                l.lon,
                l.audited,
                l.uptime,
                l.price_usd_per_hour,
                l.url,
                l.replica_key.as_ref().map(Secret::expose),
                l.state,
                l.created_ms as i64,
                l.ready_ms.map(|v| v as i64),
                l.closed_ms.map(|v| v as i64),
                l.close_reason,
            ],
        )?;
        Ok(())
    }

    fn lease(&self, dseq: &Dseq) -> Result<Option<LeaseRecord>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached("SELECT * FROM leases WHERE dseq = ?1")?;
        Ok(stmt.query_row([&dseq.0], lease_from_row).optional()?)
    }

    fn leases(&self, all: bool) -> Result<Vec<LeaseRecord>, StoreError> {
        let conn = self.conn.lock();
        let sql = if all {
            "SELECT * FROM leases ORDER BY created_ms, dseq"
        } else {
            "SELECT * FROM leases WHERE state != 'closed' ORDER BY created_ms, dseq"
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], lease_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_provider(
        &self,
        provider: &str,
        success: bool,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (s, f) = if success { (1, 0) } else { (0, 1) };
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO provider_history (provider, successes, failures, updated_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(provider) DO UPDATE SET successes = successes + ?2,
                failures = failures + ?3, updated_ms = ?4",
            params![provider, s, f, now_ms as i64],
        )?;
        Ok(())
    }

    fn provider_history(&self) -> Result<HashMap<String, ProviderHistory>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare_cached("SELECT provider, successes, failures FROM provider_history")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ProviderHistory {
                    successes: r.get::<_, i64>(1)? as u64,
                    failures: r.get::<_, i64>(2)? as u64,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn cordon(&self, c: &Cordon) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO cordons (provider, reason, since_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(provider) DO UPDATE SET reason = ?2",
            params![c.provider, c.reason, c.since_ms as i64],
        )?;
        Ok(())
    }

    fn uncordon(&self, provider: &str) -> Result<bool, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.execute("DELETE FROM cordons WHERE provider = ?1", [provider])? > 0)
    }

    fn cordons(&self) -> Result<Vec<Cordon>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached("SELECT provider, reason, since_ms FROM cordons ORDER BY provider")?;
        let rows = stmt.query_map([], |r| {
            Ok(Cordon {
                provider: r.get(0)?,
                reason: r.get(1)?,
                since_ms: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn next_fleet_version(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock();
        let v: i64 = conn.query_row(
            "INSERT INTO counters (name, value) VALUES ('fleet_version', 1)
             ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
            [],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_and_survive_reopen() {
        let path = std::env::temp_dir().join(format!(
            "leasegate-store-{}-{}.sqlite",
            std::process::id(),
            fastrand::u64(..)
        ));
        {
            let s = SqliteStore::open(&path).unwrap();
            let mut i = Intent::new("i1".into(), "p", IntentKind::Acquire, 5);
            i.replica_key = Some(Secret::new("k"));
            i.bid = Some(BidId {
                dseq: Dseq("7".into()),
                gseq: 1,
                oseq: 1,
                provider: "prov".into(),
                bseq: 2,
            });
            s.save_intent(&i).unwrap();
            s.record_provider("prov", true, 1).unwrap();
            s.record_provider("prov", false, 2).unwrap();
            assert_eq!(s.next_fleet_version().unwrap(), 1);
            assert_eq!(s.next_fleet_version().unwrap(), 2);
            let c = |reason: &str, since_ms| Cordon {
                provider: "prov".into(),
                reason: Some(reason.into()),
                since_ms,
            };
            s.cordon(&c("flaky", 10)).unwrap();
            s.cordon(&c("still flaky", 20)).unwrap();
            s.cordon(&Cordon {
                provider: "gone".into(),
                reason: None,
                since_ms: 30,
            })
            .unwrap();
            assert!(s.uncordon("gone").unwrap());
            assert!(!s.uncordon("gone").unwrap());
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let got = s.intents(false).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bid.as_ref().unwrap().bseq, 2);
        assert_eq!(got[0].replica_key.as_ref().unwrap().expose(), "k");
        let h = s.provider_history().unwrap()["prov"];
        assert_eq!((h.successes, h.failures), (1, 1));
        assert_eq!(s.next_fleet_version().unwrap(), 3);
        // A cordon survives a restart; cordoning again kept the first time.
        let cordons = s.cordons().unwrap();
        assert_eq!(cordons.len(), 1, "{cordons:?}");
        assert_eq!(cordons[0].reason.as_deref(), Some("still flaky"));
        assert_eq!(cordons[0].since_ms, 10);
        let _ = std::fs::remove_file(&path);
    }
}
