//! How values meet columns: the `done` states and task types as enums mapped to their text
//! columns (`sqlx::Type` for the `Any` driver both engines run behind), times as the
//! `DATETIME` text both engines compare correctly, uuids as 16 bytes.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::any::{Any, AnyTypeInfo, AnyValueRef};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Decode, Encode, QueryBuilder, Row, Type};

use crate::domain::tasks::TaskType;

/// The seed's `done` column of `cdr_queue` and `tasks`: `ENUM('n', 'y', 'error')`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowState {
    /// `n`: waiting (or leased to a worker).
    Pending,
    /// `y`: finished.
    Done,
    /// `error`: given up; an operator looks (`cdrmunch status`, `retry`).
    Error,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "n",
            RowState::Done => "y",
            RowState::Error => "error",
        }
    }

    fn parse(s: &str) -> Result<RowState, String> {
        match s {
            "n" => Ok(RowState::Pending),
            "y" => Ok(RowState::Done),
            "error" => Ok(RowState::Error),
            other => Err(format!("'{other}' is not a done state (n, y, error)")),
        }
    }
}

impl PartialEq<&str> for RowState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for RowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RowState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Maps an enum to a text column through its seed spelling.
macro_rules! text_column {
    ($ty:ty, $parse:expr) => {
        impl Type<Any> for $ty {
            fn type_info() -> AnyTypeInfo {
                <str as Type<Any>>::type_info()
            }
            fn compatible(ty: &AnyTypeInfo) -> bool {
                <str as Type<Any>>::compatible(ty)
            }
        }
        impl<'q> Encode<'q, Any> for $ty {
            fn encode_by_ref(&self, buf: &mut <Any as sqlx::Database>::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<'q, Any>>::encode(self.as_str(), buf)
            }
        }
        impl<'r> Decode<'r, Any> for $ty {
            fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<'r, Any>>::decode(value)?;
                $parse(text).map_err(Into::into)
            }
        }
    };
}

text_column!(RowState, RowState::parse);
text_column!(TaskType, str::parse::<TaskType>);

/// `DATETIME` text in UTC at whole seconds, the form both engines compare correctly.
pub(crate) fn sql_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Reads back what [`sql_time`] wrote (selected as `CAST(col AS CHAR)` on both engines).
pub(crate) fn parse_sql_time(s: &str) -> DateTime<Utc> {
    chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S").map(|t| t.and_utc()).unwrap_or_default()
}

/// Column `i` of a row as an id (selected as `CAST(… AS SIGNED)`: ids travel as i64).
pub(crate) fn id(r: &AnyRow, i: usize) -> u64 {
    r.get::<i64, _>(i) as u64
}

/// A text value cut to what its column holds (whole characters).
pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Column `i` of a row as a count (`retry`, `crashes`, `node_index`).
pub(crate) fn count(r: &AnyRow, i: usize) -> u32 {
    r.get::<i64, _>(i) as u32
}

/// Column `i` of a row as a 16-byte uuid.
pub(crate) fn uuid(r: &AnyRow, i: usize) -> [u8; 16] {
    uuid_bytes(&r.get::<Vec<u8>, _>(i))
}

pub(crate) fn uuid_bytes(v: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = v.len().min(16);
    out[..n].copy_from_slice(&v[..n]);
    out
}

/// Appends `(?, ?, …)` binding each id: the `IN` list of a batch statement.
pub(crate) fn push_ids(qb: &mut QueryBuilder<Any>, ids: impl IntoIterator<Item = u64>) {
    qb.push("(");
    let mut sep = qb.separated(", ");
    for id in ids {
        sep.push_bind(id as i64);
    }
    sep.push_unseparated(")");
}

/// Appends `(?, ?, …)` binding each uuid.
pub(crate) fn push_uuids(qb: &mut QueryBuilder<Any>, uuids: impl IntoIterator<Item = [u8; 16]>) {
    qb.push("(");
    let mut sep = qb.separated(", ");
    for u in uuids {
        sep.push_bind(u.to_vec());
    }
    sep.push_unseparated(")");
}

/// Per-row bind count stays far below both engines' placeholder limits.
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 1000;
