//! Parquet files whose schema nests too deep, refused before the parquet reader sees them.
//!
//! The parquet crate turns the flat list of schema elements in a file's footer into a tree
//! with one recursive call per level of nesting. A file of 1.6 MB whose schema nests 200,000
//! groups overflows the stack of the thread that opens it and aborts the server (uploads, `tarn
//! load`, and the drop zone, which would open the file again at every start). [`check_footer`]
//! reads the footer's schema list itself, in a loop, and refuses schemas nested deeper than
//! [`MAX_NESTING`] groups. Everything else about the footer is left to the parquet reader.
//!
//! The footer is Thrift's compact protocol: `FileMetaData` field 2 is the list of
//! `SchemaElement` structs, whose field 5 is the number of children of a group.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::nesting::MAX_NESTING;

/// Refuses a Parquet file whose schema nests groups deeper than [`MAX_NESTING`]. A file that is
/// not Parquet, or whose footer this cannot read, passes: the parquet reader says what is wrong
/// with it.
pub fn check_footer(file: &File) -> Result<(), String> {
    let mut file = file;
    let io = |e: std::io::Error| e.to_string();
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    let mut tail = [0u8; 8];
    if len < 12 || file.seek(SeekFrom::End(-8)).and_then(|_| file.read_exact(&mut tail)).is_err() {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if &tail[4..] != b"PAR1" || footer_len > len - 8 {
        return Ok(());
    }
    let mut footer = vec![0u8; footer_len as usize];
    file.seek(SeekFrom::End(-8 - footer_len as i64)).map_err(io)?;
    file.read_exact(&mut footer).map_err(io)?;
    match schema_depth(&footer) {
        Some(depth) if depth > MAX_NESTING => Err(format!(
            "its schema nests groups {depth} deep; Tarn reads at most {MAX_NESTING} levels"
        )),
        _ => Ok(()),
    }
}

/// How deep the groups of the footer's schema nest (the root message not counted), or `None`
/// when the footer cannot be read this far.
fn schema_depth(footer: &[u8]) -> Option<usize> {
    let mut r = Compact { bytes: footer, at: 0 };
    let mut last_id = 0;
    loop {
        let (id, kind) = r.field_header(&mut last_id)?;
        match (id, kind) {
            (_, STOP) => return None,
            (2, LIST) => break,
            _ => r.skip(kind, 0)?,
        }
    }
    let (count, kind) = r.list_header()?;
    if kind != STRUCT {
        return None;
    }
    // The parquet crate's recursion, as a loop: children still expected by each open group,
    // innermost last. A group closes when its last descendant has been read.
    let mut open: Vec<i64> = Vec::new();
    let mut deepest = 0;
    for _ in 0..count {
        let children = r.num_children()?;
        if let Some(parent) = open.last_mut() {
            *parent -= 1;
        }
        if children > 0 {
            open.push(children);
            deepest = deepest.max(open.len());
        } else {
            while open.last() == Some(&0) {
                open.pop();
            }
        }
    }
    Some(deepest.saturating_sub(1))
}

const STOP: u8 = 0;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// A reader of Thrift's compact protocol, as far as the schema list needs.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// The next field's id and type (`STOP` at the end of a struct).
    fn field_header(&mut self, last_id: &mut i64) -> Option<(i64, u8)> {
        let b = self.byte()?;
        let kind = b & 0x0f;
        if kind == STOP {
            return Some((0, STOP));
        }
        let delta = i64::from(b >> 4);
        *last_id = if delta == 0 { self.zigzag()? } else { *last_id + delta };
        Some((*last_id, kind))
    }

    fn list_header(&mut self) -> Option<(u64, u8)> {
        let b = self.byte()?;
        let size = match b >> 4 {
            15 => self.varint()?,
            n => u64::from(n),
        };
        Some((size, b & 0x0f))
    }

    /// Reads one `SchemaElement` and returns its `num_children` (0 for a leaf).
    fn num_children(&mut self) -> Option<i64> {
        let (mut last_id, mut children) = (0, 0);
        loop {
            match self.field_header(&mut last_id)? {
                (_, STOP) => return Some(children),
                (5, 5) => children = self.zigzag()?,
                (_, kind) => self.skip(kind, 0)?,
            }
        }
    }

    /// Skips a value of compact type `kind`. Nested containers recurse, at most 64 deep (the
    /// parquet crate's own bound): beyond that the footer is left to the parquet reader.
    fn skip(&mut self, kind: u8, depth: usize) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match kind {
            1 | 2 => {}
            3 => {
                self.byte()?;
            }
            4..=6 => {
                self.varint()?;
            }
            7 => self.at = self.at.checked_add(8).filter(|&at| at <= self.bytes.len())?,
            8 => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.at = self.at.checked_add(len).filter(|&at| at <= self.bytes.len())?;
            }
            LIST | SET => {
                let (size, item) = self.list_header()?;
                for _ in 0..size {
                    // Booleans in lists take a byte.
                    if item == 1 || item == 2 {
                        self.byte()?;
                    } else {
                        self.skip(item, depth + 1)?;
                    }
                }
            }
            MAP => {
                let size = self.varint()?;
                if size > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..size {
                        self.skip(kinds >> 4, depth + 1)?;
                        self.skip(kinds & 0x0f, depth + 1)?;
                    }
                }
            }
            STRUCT => {
                let mut last_id = 0;
                loop {
                    match self.field_header(&mut last_id)? {
                        (_, STOP) => break,
                        (_, kind) => self.skip(kind, depth + 1)?,
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int32Array, RecordBatch, StructArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    /// A footer-only Parquet file whose schema nests `depth` optional groups over an int32.
    fn nested_footer(depth: usize) -> Vec<u8> {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 0x80 {
                out.push((n as u8) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
        }
        let mut meta = vec![0x15, 0x02]; // field 1 (version), i32 1
        meta.push(0x19); // field 2, list
        meta.push(0xfc); // list of structs, size follows
        varint(depth as u64 + 2, &mut meta);
        meta.extend([0x48, 6]); // root: field 4 (name), binary
        meta.extend(b"schema");
        meta.extend([0x15, 0x02, 0x00]); // field 5 (num_children) = 1, stop
        for _ in 0..depth {
            // field 3 (repetition) = 1, field 4 (name) = "g", field 5 (num_children) = 1
            meta.extend([0x35, 0x02, 0x18, 1, b'g', 0x15, 0x02, 0x00]);
        }
        meta.extend([0x15, 0x02, 0x25, 0x02, 0x18, 1, b'x', 0x00]); // the int32 leaf
        meta.extend([0x16, 0x00, 0x19, 0x0c, 0x00]); // num_rows 0, no row groups, stop
        let mut file = b"PAR1".to_vec();
        file.extend(&meta);
        file.extend((meta.len() as u32).to_le_bytes());
        file.extend(b"PAR1");
        file
    }

    fn temp_file(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    /// 200,000 nested groups: the parquet crate recursed once per level and overflowed the
    /// stack of the thread loading the file (the server aborted).
    #[test]
    fn deeply_nested_schemas_are_refused_before_parquet_reads_them() {
        let err = check_footer(&temp_file(&nested_footer(200_000))).unwrap_err();
        assert_eq!(err, "its schema nests groups 200000 deep; Tarn reads at most 64 levels");
        assert!(check_footer(&temp_file(&nested_footer(MAX_NESTING + 1))).is_err());
        // At the limit the parquet crate reads it.
        let file = temp_file(&nested_footer(MAX_NESTING));
        check_footer(&file).unwrap();
        let builder =
            tarn_lake::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )
            .unwrap();
        assert_eq!(builder.schema().fields().len(), 1);
    }

    #[test]
    fn files_the_parquet_writer_makes_pass() {
        let inner: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let point = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int32, false)),
            inner.clone(),
        )]);
        let batch =
            RecordBatch::try_from_iter([("id", inner), ("point", Arc::new(point) as ArrayRef)])
                .unwrap();
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = tarn_lake::deltalake::parquet::arrow::ArrowWriter::try_new(
            &mut file,
            batch.schema(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        check_footer(&file).unwrap();
        // Not Parquet at all: for the parquet reader to refuse.
        check_footer(&temp_file(b"id,name\n1,a\n")).unwrap();
        check_footer(&temp_file(b"")).unwrap();
    }
}
