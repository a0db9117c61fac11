//! billing: the seed's billing feeder. The columns of `billing-feeder.field_names` go into
//! one table of the billing database (`billingdb.url`, its own pool), one row per call,
//! keyed by uuid: a repeated attempt inserts nothing, so the billing system never sees a
//! call twice.

use async_trait::async_trait;
use sqlx::{MySql, MySqlPool, QueryBuilder, Sqlite, SqlitePool};

use super::{HandlerError, Job, TaskHandler};
use crate::config::Settings;
use crate::domain::billing::{BillingLayout, BillingValue, ColumnType};
use crate::store::{MysqlRepository, SqliteRepository, StoreError};

enum Db {
    Mysql(MySqlPool),
    Sqlite(SqlitePool),
}

pub struct BillingFeeder {
    db: Db,
    table: String,
    layout: BillingLayout,
}

impl BillingFeeder {
    /// Connects (creating the database and table if missing). The table's columns follow
    /// the config; an existing table is used as it is.
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
        let db = if url.starts_with("sqlite:") {
            Db::Sqlite(SqliteRepository::connect(url, 2).await.map_err(fail)?.pool().clone())
        } else {
            let url = url.replacen("mariadb:", "mysql:", 1);
            Db::Mysql(MysqlRepository::connect(&url, 4).await.map_err(fail)?.pool().clone())
        };
        let feeder = BillingFeeder { db, table, layout };
        feeder.create_table().await.map_err(|e| format!("creating billing table: {e}"))?;
        Ok(feeder)
    }

    async fn create_table(&self) -> Result<(), sqlx::Error> {
        let mysql = matches!(self.db, Db::Mysql(_));
        let q = |name: &str| if mysql { format!("`{name}`") } else { format!("\"{name}\"") };
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
            cols.push(format!("{} {sql_type}", q(name)));
        }
        cols.push(format!("{} {}", q("fed_at"), "TIMESTAMP DEFAULT CURRENT_TIMESTAMP"));
        cols.push(format!("UNIQUE ({})", q("uuid")));
        let ddl = format!("CREATE TABLE IF NOT EXISTS {} ({})", q(&self.table), cols.join(", "));
        match &self.db {
            Db::Mysql(p) => sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(p).await.map(|_| ())?,
            Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }
}

/// Insert-unless-present of one billing row; the same builder for both engines.
macro_rules! insert_row {
    ($db:ty, $pool:expr, $verb:expr, $quote:expr, $table:expr, $layout:expr, $row:expr) => {{
        let q = $quote;
        let names: Vec<String> = $layout.columns.iter().map(|(n, _)| q(n)).collect();
        let mut qb: QueryBuilder<$db> =
            QueryBuilder::new(format!("{} INTO {} ({}) VALUES (", $verb, q($table), names.join(", ")));
        let mut sep = qb.separated(", ");
        for v in $row {
            match v {
                BillingValue::Text(s) | BillingValue::Decimal(s) => sep.push_bind(s.clone()),
                BillingValue::Null => sep.push_bind(None::<String>),
            };
        }
        qb.push(")");
        qb.build().execute($pool).await.map(|r| r.rows_affected())
    }};
}

#[async_trait]
impl TaskHandler for BillingFeeder {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let row = self.layout.row(&job.doc, &job.node).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let inserted = match &self.db {
            Db::Mysql(p) => {
                insert_row!(MySql, p, "INSERT IGNORE", |n: &str| format!("`{n}`"), &self.table, &self.layout, &row)
            }
            Db::Sqlite(p) => insert_row!(
                Sqlite,
                p,
                "INSERT OR IGNORE",
                |n: &str| format!("\"{n}\""),
                &self.table,
                &self.layout,
                &row
            ),
        }
        .map_err(|e| HandlerError::from_store("writing billing row", StoreError::from(e)))?;
        if inserted == 0 {
            tracing::debug!(uuid = %job.uuid, "billing row already present");
        }
        Ok(())
    }
}
