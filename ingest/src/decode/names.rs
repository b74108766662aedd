//! Column names of tables created on first write: ones every engine reading the lake takes.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Fields};

use super::error::DecodeError;

/// Characters Spark and Hive refuse in Parquet column names (Delta without column mapping).
const FORBIDDEN_IN_NAMES: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// Refuses an inferred schema other engines could not read back: no columns at all, a name
/// that is empty or holds one of [`FORBIDDEN_IN_NAMES`], or two names that differ only in
/// case (Delta and SQL compare names without case). Nested fields are checked too.
pub(super) fn check(fields: &Fields) -> Result<(), DecodeError> {
    if fields.is_empty() {
        return Err(DecodeError::at(
            Some(1),
            "the records have no fields: a table needs at least one column",
        ));
    }
    check_names(fields)
}

/// [`check`] without the first rule: the names alone.
pub(super) fn check_names(fields: &Fields) -> Result<(), DecodeError> {
    check_fields(fields, "")
}

fn check_fields(fields: &Fields, parent: &str) -> Result<(), DecodeError> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for field in fields {
        let path = format!("{parent}{}", field.name());
        if field.name().is_empty() || field.name().contains(FORBIDDEN_IN_NAMES) {
            return Err(DecodeError::at(
                None,
                format!(
                    "field '{path}' cannot be a column name: names must be non-empty and free of \
                     spaces and any of , ; {{ }} ( ) = tab newline"
                ),
            ));
        }
        if let Some(other) = seen.insert(field.name().to_lowercase(), field.name()) {
            return Err(DecodeError::at(
                None,
                format!(
                    "fields '{parent}{other}' and '{path}' differ only in case; column names \
                     are compared without case"
                ),
            ));
        }
        check_nested(field.data_type(), &path)?;
    }
    Ok(())
}

/// [`check_fields`] for the fields inside a struct or a list (of lists) of structs.
fn check_nested(data_type: &DataType, path: &str) -> Result<(), DecodeError> {
    match data_type {
        DataType::Struct(children) => check_fields(children, &format!("{path}.")),
        DataType::List(item) => check_nested(item.data_type(), &format!("{path}[]")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;

    use super::*;

    fn fields(names: &[&str]) -> Fields {
        names.iter().map(|n| Field::new(*n, DataType::Int64, true)).collect()
    }

    #[test]
    fn names_every_engine_reads() {
        assert!(check(&fields(&["a", "b_c", "é"])).is_ok());
        let e = check(&fields(&[])).unwrap_err().to_string();
        assert!(e.contains("at least one column"), "{e}");
        let e = check(&fields(&["a b"])).unwrap_err().to_string();
        assert!(e.contains("field 'a b' cannot be a column name"), "{e}");
        let e = check(&fields(&["id", "ID"])).unwrap_err().to_string();
        assert!(e.contains("fields 'id' and 'ID' differ only in case"), "{e}");
        let nested = Field::new_list(
            "l",
            Field::new_list_field(DataType::Struct(fields(&["x", ""])), true),
            true,
        );
        let e = check(&Fields::from(vec![nested])).unwrap_err().to_string();
        assert!(e.contains("field 'l[].' cannot"), "{e}");
    }
}
