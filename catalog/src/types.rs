//! Names of column types as Tarn shows them.

use arrow::datatypes::{DataType, TimeUnit};

/// The name Tarn uses for an Arrow type in its APIs: `string`, `int64`, `float64`, `boolean`,
/// `date`, `timestamp` (UTC, microseconds), `decimal(p,s)`, `struct<...>`, `list<...>`; other
/// types fall back to Arrow's own spelling in lower case.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "null".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float16 => "float16".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if is_utc(tz) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            format!("list<{}>", type_name(f.data_type()))
        }
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect();
            format!("struct<{}>", inner.join(", "))
        }
        DataType::Map(f, _) => match f.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("map<{}, {}>", type_name(kv[0].data_type()), type_name(kv[1].data_type()))
            }
            other => format!("map<{}>", type_name(other)),
        },
        DataType::Dictionary(_, value) => type_name(value),
        other => other.to_string().to_ascii_lowercase(),
    }
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00" | "Z" | "utc" | "Etc/UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn names() {
        assert_eq!(type_name(&DataType::Utf8), "string");
        assert_eq!(
            type_name(&DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
            "timestamp"
        );
        assert_eq!(type_name(&DataType::Decimal128(10, 2)), "decimal(10,2)");
        assert_eq!(
            type_name(&DataType::List(Arc::new(Field::new("element", DataType::Int64, true)))),
            "list<int64>"
        );
    }
}
