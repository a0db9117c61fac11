//! billing: the seed's billing feeder. The columns of `billing-feeder.field_names` go into
//! one table of the billing database (`billingdb.url`, its own pool), one row per call,
//! keyed by uuid: a repeated attempt inserts nothing, so the billing system never sees a
//! call twice. A rerate adds one adjustment row per changed call, keyed by uuid + rerate id
//! (`billingEventType = rerate`): the billing feed is a ledger, never rewritten.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{HandlerError, Job, TaskHandler};
use crate::config::Settings;
use crate::domain::billing::{BillingLayout, BillingValue, ColumnType};
use crate::domain::mapping::FieldWarning;
use crate::domain::ncdr::{NormalizedDoc, TaskDoc};
use crate::store::{Dialect, Store, StoreError};

pub struct BillingFeeder {
    db: Store,
    table: String,
    layout: BillingLayout,
    /// `INSERT … INTO table (columns) VALUES (`, made once.
    insert: String,
}

/// The column that tells an adjustment from the call's own row ('' for the latter).
const RERATE_ID: &str = "rerate_id";

impl BillingFeeder {
    /// Connects to `billingdb.url` (creating the database and table if missing). The
    /// table's columns follow the config; an existing table is used as it is, given the
    /// rerate key when it predates it.
    pub async fn connect(s: &Settings) -> Result<BillingFeeder, String> {
        let bf = &s.billing_feeder;
        let layout = BillingLayout::new(&bf.field_names, &bf.field_types, bf.node_name_map.clone())
            .map_err(|e| e.to_string())?;
        let table = bf.table.clone();
        if !table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("billing-feeder.table '{table}' is not a valid table name"));
        }
        let url = &s.database.billingdb_url;
        let fail = |e: StoreError| format!("billing database {}: {e}", crate::store::redact_url(url));
        let db = Store::connect(url, 4).await.map_err(fail)?;
        let d = db.dialect();
        let mut names: Vec<String> = layout.columns.iter().map(|(n, _)| d.quote(n)).collect();
        names.push(d.quote(RERATE_ID));
        let insert = format!("{} INTO {} ({}) VALUES (", d.insert_or_ignore(), d.quote(&table), names.join(", "));
        let feeder = BillingFeeder { db, table, layout, insert };
        feeder.create_table().await.map_err(|e| format!("creating billing table: {e}"))?;
        Ok(feeder)
    }

    /// The table's columns and key as this version writes them.
    fn table_ddl(&self, name: &str) -> String {
        let d = self.db.dialect();
        let mysql = d == Dialect::Mysql;
        let mut cols = vec![if mysql {
            "`id` BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY".to_string()
        } else {
            "\"id\" INTEGER PRIMARY KEY AUTOINCREMENT".to_string()
        }];
        for (name, ty) in &self.layout.columns {
            let sql_type = match (ty, name.as_str(), mysql) {
                (_, "uuid", true) => "VARCHAR(64) NOT NULL",
                (_, "uuid", false) => "TEXT NOT NULL",
                (ColumnType::Decimal, _, true) => "DECIMAL(24,8) NULL",
                (ColumnType::Decimal, _, false) => "NUMERIC",
                (ColumnType::Text, _, true) => "VARCHAR(255) NULL",
                (ColumnType::Text, _, false) => "TEXT",
            };
            cols.push(format!("{} {sql_type}", d.quote(name)));
        }
        let rerate = if mysql { "VARCHAR(64) NOT NULL DEFAULT ''" } else { "TEXT NOT NULL DEFAULT ''" };
        cols.push(format!("{} {rerate}", d.quote(RERATE_ID)));
        cols.push(format!("{} TIMESTAMP DEFAULT CURRENT_TIMESTAMP", d.quote("fed_at")));
        cols.push(format!("UNIQUE ({}, {})", d.quote("uuid"), d.quote(RERATE_ID)));
        format!("CREATE TABLE IF NOT EXISTS {} ({})", d.quote(name), cols.join(", "))
    }

    async fn create_table(&self) -> Result<(), sqlx::Error> {
        let pool = self.db.pool();
        sqlx::query(sqlx::AssertSqlSafe(self.table_ddl(&self.table))).execute(pool).await?;
        let d = self.db.dialect();
        let has_key: i64 = match d {
            Dialect::Mysql => sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = ? AND COLUMN_NAME = 'rerate_id'",
            ),
            Dialect::Sqlite => sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'rerate_id'"),
        }
        .bind(self.table.clone())
        .fetch_one(pool)
        .await?;
        if has_key > 0 {
            return Ok(());
        }
        // A table from before rerates: unique by uuid alone. It gains the rerate key.
        tracing::info!("billing table {}: adding the rerate key (uuid, rerate_id)", self.table);
        let t = d.quote(&self.table);
        let mut tx = pool.begin().await?;
        match d {
            Dialect::Mysql => {
                let alter = format!(
                    "ALTER TABLE {t} ADD COLUMN `rerate_id` VARCHAR(64) NOT NULL DEFAULT '', DROP INDEX `uuid`, \
                     ADD UNIQUE KEY `uuid_rerate` (`uuid`, `rerate_id`)"
                );
                sqlx::query(sqlx::AssertSqlSafe(alter)).execute(&mut *tx).await?;
            }
            Dialect::Sqlite => {
                // SQLite cannot drop a table's UNIQUE constraint: the table is rebuilt, with
                // the columns it has — which must be those of the config (a ledger loses none)
                let had: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                    .bind(self.table.clone())
                    .fetch_all(&mut *tx)
                    .await?;
                let mut cols: Vec<&str> = self.layout.columns.iter().map(|(c, _)| c.as_str()).collect();
                cols.extend(["id", "fed_at"]);
                let mut sorted = (had.iter().map(String::as_str).collect::<Vec<_>>(), cols.clone());
                sorted.0.sort_unstable();
                sorted.1.sort_unstable();
                if sorted.0 != sorted.1 {
                    return Err(sqlx::Error::Protocol(format!(
                        "table {} has the columns {} where billing-feeder.field_names makes {}: \
                         it needs the rerate key (uuid, rerate_id) added by hand",
                        self.table,
                        sorted.0.join(", "),
                        sorted.1.join(", ")
                    )));
                }
                let new = format!("{}_rerate_upgrade", self.table);
                let cols = cols.iter().map(|c| d.quote(c)).collect::<Vec<_>>().join(", ");
                let steps = [
                    self.table_ddl(&new),
                    format!("INSERT INTO {} ({cols}) SELECT {cols} FROM {t}", d.quote(&new)),
                    format!("DROP TABLE {t}"),
                    format!("ALTER TABLE {} RENAME TO {t}", d.quote(&new)),
                ];
                for step in steps {
                    sqlx::query(sqlx::AssertSqlSafe(step)).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await
    }

    /// Writes the billing row of a normalized CDR from its billing `<task>`; for a rerate, an
    /// adjustment row under `rerate_id`. Returns whether a row was added (false: it was
    /// there already) and the values the columns could not take (left NULL).
    pub async fn feed(
        &self,
        doc: &NormalizedDoc,
        node: &TaskDoc,
        rerate_id: Option<&str>,
    ) -> Result<(bool, Vec<FieldWarning>), HandlerError> {
        let (row, warnings) = self.layout.row(doc, node).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let mut qb = QueryBuilder::new(&self.insert);
        let mut sep = qb.separated(", ");
        for v in &row {
            match v {
                BillingValue::Text(s) | BillingValue::Decimal(s) => sep.push_bind(s.clone()),
                BillingValue::Null => sep.push_bind(None::<String>),
            };
        }
        sep.push_bind(rerate_id.unwrap_or_default().to_string());
        qb.push(")");
        let inserted = qb
            .build()
            .execute(self.db.pool())
            .await
            .map_err(|e| HandlerError::failed("writing billing row", &StoreError::from(e)))?
            .rows_affected();
        Ok((inserted > 0, warnings))
    }
}

#[async_trait]
impl TaskHandler for BillingFeeder {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let (added, warnings) = self.feed(&job.doc, &job.node, None).await?;
        for w in &warnings {
            crate::events::FieldWarned { uuid: &job.uuid, warning: w }.emit();
        }
        if !added {
            tracing::debug!(uuid = %job.uuid, "billing row already present");
        }
        Ok(())
    }
}
