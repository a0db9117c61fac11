//! billing: the seed's billing feeder. The columns of `billing-feeder.field_names` go into
//! one table of the billing database (`billingdb.url`, its own pool), one row per call,
//! keyed by uuid: a repeated attempt inserts nothing, so the billing system never sees a
//! call twice.

use async_trait::async_trait;
use sqlx::QueryBuilder;

use super::{HandlerError, Job, TaskHandler};
use crate::config::Settings;
use crate::domain::billing::{BillingLayout, BillingValue, ColumnType};
use crate::store::{Dialect, Store, StoreError};

pub struct BillingFeeder {
    db: Store,
    table: String,
    layout: BillingLayout,
}

impl BillingFeeder {
    /// Connects to `billingdb.url` (creating the database and table if missing). The
    /// table's columns follow the config; an existing table is used as it is.
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
        let feeder = BillingFeeder { db, table, layout };
        feeder.create_table().await.map_err(|e| format!("creating billing table: {e}"))?;
        Ok(feeder)
    }

    async fn create_table(&self) -> Result<(), sqlx::Error> {
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
        cols.push(format!("{} TIMESTAMP DEFAULT CURRENT_TIMESTAMP", d.quote("fed_at")));
        cols.push(format!("UNIQUE ({})", d.quote("uuid")));
        let ddl = format!("CREATE TABLE IF NOT EXISTS {} ({})", d.quote(&self.table), cols.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(self.db.pool()).await?;
        Ok(())
    }
}

#[async_trait]
impl TaskHandler for BillingFeeder {
    async fn run(&self, job: &Job) -> Result<(), HandlerError> {
        let (row, warnings) = self.layout.row(&job.doc, &job.node).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        for w in &warnings {
            crate::events::FieldWarned { uuid: &job.uuid, warning: w }.emit();
        }
        let d = self.db.dialect();
        let names: Vec<String> = self.layout.columns.iter().map(|(n, _)| d.quote(n)).collect();
        let head = format!("{} INTO {} ({}) VALUES (", d.insert_or_ignore(), d.quote(&self.table), names.join(", "));
        let mut qb = QueryBuilder::new(head);
        let mut sep = qb.separated(", ");
        for v in &row {
            match v {
                BillingValue::Text(s) | BillingValue::Decimal(s) => sep.push_bind(s.clone()),
                BillingValue::Null => sep.push_bind(None::<String>),
            };
        }
        qb.push(")");
        let inserted = qb
            .build()
            .execute(self.db.pool())
            .await
            .map_err(|e| HandlerError::failed("writing billing row", &StoreError::from(e)))?
            .rows_affected();
        if inserted == 0 {
            tracing::debug!(uuid = %job.uuid, "billing row already present");
        }
        Ok(())
    }
}
