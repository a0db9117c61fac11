//! The billing feeder's record: the seed's `billing-feeder.field_names` / `field_types` /
//! `node_name_map__*`, filled from a normalized CDR and its billing `<task>`.

use std::collections::BTreeMap;

use super::mapping::{is_decimal, FieldMap, FieldWarning};
use super::ncdr::{NormalizedDoc, TaskDoc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `s`: text.
    Text,
    /// `d`: decimal number.
    Decimal,
}

/// Column layout from config, checked once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingLayout {
    pub columns: Vec<(String, ColumnType)>,
    /// source field -> billing column (`node_name_map__billsec = quantity`).
    pub node_name_map: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingValue {
    Text(String),
    /// A decimal in canonical text form, bound as text so no precision is lost.
    Decimal(String),
    Null,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error("billing-feeder.field_names must include uuid (the idempotency key)")]
    NoUuidColumn,
    #[error("billing column '{0}' is not a valid column name (letters, digits, '_')")]
    BadColumn(String),
    #[error("normalized CDR has no uuid")]
    NoUuid,
}

impl BillingLayout {
    pub fn new(
        names: &[String],
        types: &[String],
        node_name_map: BTreeMap<String, String>,
    ) -> Result<BillingLayout, BillingError> {
        let mut columns = Vec::with_capacity(names.len());
        for (name, ty) in names.iter().zip(types) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(BillingError::BadColumn(name.clone()));
            }
            columns.push((name.clone(), if ty == "d" { ColumnType::Decimal } else { ColumnType::Text }));
        }
        if !columns.iter().any(|(n, _)| n == "uuid") {
            return Err(BillingError::NoUuidColumn);
        }
        Ok(BillingLayout { columns, node_name_map })
    }

    /// The normalized field a column is filled from: mapped onto it, else the same name.
    pub fn source_of<'a>(&'a self, column: &'a str) -> &'a str {
        self.node_name_map.iter().find(|(_, dst)| *dst == column).map_or(column, |(src, _)| src.as_str())
    }

    /// One value per column: the billing task's own child element first, then a CDR field
    /// mapped onto the column, then the CDR field of the same name; missing or empty is NULL.
    /// A value a decimal column cannot take is NULL too, with a warning: a billed call is
    /// never made unbillable by what its CDR carried.
    pub fn row(
        &self,
        doc: &NormalizedDoc,
        task: &TaskDoc,
    ) -> Result<(Vec<BillingValue>, Vec<FieldWarning>), BillingError> {
        if doc.field("uuid").is_none_or(|u| u.is_empty()) {
            return Err(BillingError::NoUuid);
        }
        let mut warnings = Vec::new();
        let row = self
            .columns
            .iter()
            .map(|(column, ty)| {
                let mapped =
                    self.node_name_map.iter().filter(|(_, dst)| *dst == column).find_map(|(src, _)| doc.field(src));
                let value = task.param(column).map(str::to_string).or(mapped).or_else(|| doc.field(column));
                match (value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()), ty) {
                    (None, _) => BillingValue::Null,
                    (Some(v), ColumnType::Text) => BillingValue::Text(v),
                    (Some(v), ColumnType::Decimal) if is_decimal(&v) => BillingValue::Decimal(v),
                    (Some(value), ColumnType::Decimal) => {
                        let reason = "not a decimal number: the billing column is decimal".to_string();
                        warnings.push(FieldWarning { field: column.clone(), value, reason });
                        BillingValue::Null
                    }
                }
            })
            .collect();
        Ok((row, warnings))
    }

    /// Every decimal column must be fed by a numeric field: checked at start, so a mismatch
    /// stops the service naming both lines instead of failing billed calls one by one.
    /// `types_at` says where `billing-feeder.field_types` is set; `map_at` names the map.
    pub fn check_types(&self, map: &FieldMap, types_at: &str, map_at: &str) -> Result<(), String> {
        for (column, ty) in &self.columns {
            let source = self.source_of(column);
            match (ty, map.declared(source)) {
                (ColumnType::Decimal, Some((t, line))) if !t.is_numeric() => {
                    let declared = match line {
                        Some(line) => format!("{map_at}:{line} declares '{source}' {}", t.name()),
                        None => format!("'{source}' is computed as {}", t.name()),
                    };
                    return Err(format!(
                        "billing-feeder.field_types ({types_at}) makes billing column '{column}' decimal, but {declared}"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> NormalizedDoc {
        let data = [("uuid", "u-1"), ("billsec", "61"), ("answer_epoch", "1700000005"), ("retailRate", "0.02")];
        NormalizedDoc {
            data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            tasks: vec![],
            warnings: vec![],
        }
    }

    fn layout(names: &str, types: &str) -> BillingLayout {
        let split = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let map = [("billsec".to_string(), "quantity".to_string())].into();
        BillingLayout::new(&split(names), &split(types), map).unwrap()
    }

    #[test]
    fn columns_fill_from_task_then_mapping_then_field() {
        let l = layout("uuid,quantity,answer_stamp,retailRate,lcr_carrier", "s,d,s,d,s");
        let no_params = TaskDoc { task_type: "billing".into(), params: vec![] };
        let (row, warnings) = l.row(&doc(), &no_params).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            row,
            vec![
                BillingValue::Text("u-1".into()),
                BillingValue::Decimal("61".into()),
                BillingValue::Text("2023-11-14 22:13:25".into()),
                BillingValue::Decimal("0.02".into()),
                BillingValue::Null,
            ]
        );
        let with_param = TaskDoc { task_type: "billing".into(), params: vec![("quantity".into(), "60".into())] };
        assert_eq!(l.row(&doc(), &with_param).unwrap().0[1], BillingValue::Decimal("60".into()));
    }

    #[test]
    fn a_value_a_decimal_column_cannot_take_is_null_with_a_warning() {
        let l = layout("uuid,retailRate,rmOriginatorUserId", "s,d,d");
        let mut d = doc();
        d.data[3].1 = "two cents".into();
        let task = TaskDoc { task_type: "billing".into(), params: vec![] };
        for bad in ["0.01 USD", "1e3", "NaN", "inf", "12345678901234567890123", "default"] {
            d.data.retain(|(k, _)| k != "rmOriginatorUserId");
            d.data.push(("rmOriginatorUserId".into(), bad.into()));
            let (row, warnings) = l.row(&d, &task).unwrap();
            assert_eq!(row, vec![BillingValue::Text("u-1".into()), BillingValue::Null, BillingValue::Null], "{bad}");
            let fields: Vec<_> = warnings.iter().map(|w| (w.field.as_str(), w.value.as_str())).collect();
            assert_eq!(fields, [("retailRate", "two cents"), ("rmOriginatorUserId", bad)]);
        }
    }

    #[test]
    fn layouts_are_checked_and_named() {
        let names = ["quantity".to_string()];
        assert_eq!(BillingLayout::new(&names, &["d".into()], BTreeMap::new()), Err(BillingError::NoUuidColumn));
        let bad = ["uuid".to_string(), "x; DROP".to_string()];
        assert!(matches!(
            BillingLayout::new(&bad, &["s".into(), "s".into()], BTreeMap::new()),
            Err(BillingError::BadColumn(_))
        ));
        assert!(is_decimal("-0.5") && is_decimal("3") && !is_decimal(".") && !is_decimal("1e5"));
    }

    #[test]
    fn a_decimal_column_fed_by_a_text_field_is_a_startup_error_naming_both_lines() {
        let map = FieldMap::parse("caller_id_name = text: var:x\nlcr_rate = text: var:lcr_rate\n").unwrap();
        let l = layout("uuid,quantity,lcr_rate", "s,d,d");
        let err = l.check_types(&map, "billing-feeder.conf:5", "field-map.conf").unwrap_err();
        assert_eq!(
            err,
            "billing-feeder.field_types (billing-feeder.conf:5) makes billing column 'lcr_rate' decimal, \
             but field-map.conf:2 declares 'lcr_rate' text"
        );
    }
}
