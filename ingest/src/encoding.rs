//! Compressed request bodies: `Content-Encoding: gzip` or `zstd`, undone with a bound on the
//! size of what comes out (a small body must not inflate into gigabytes).

use std::io::Read;

use bytes::Bytes;

use crate::Error;

/// Undoes `Content-Encoding` (gzip, zstd), refusing results larger than `limit`.
pub fn decompress(encoding: Option<&str>, body: Bytes, limit: usize) -> Result<Bytes, Error> {
    let read = |reader: &mut dyn Read, name: &str| {
        let mut out = Vec::with_capacity((body.len() * 4).min(limit));
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::BadEncoding { encoding: name.into(), reason: e.to_string() })?;
        if out.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        Ok(Bytes::from(out))
    };
    match encoding {
        None | Some("identity") | Some("") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            read(&mut flate2::read::MultiGzDecoder::new(&body[..]), "gzip")
        }
        Some("zstd") => {
            let mut decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|e| {
                Error::BadEncoding { encoding: "zstd".into(), reason: e.to_string() }
            })?;
            read(&mut decoder, "zstd")
        }
        Some(other) => Err(Error::UnsupportedMediaType(format!(
            "Content-Encoding '{other}' is not supported; send gzip, zstd or an uncompressed body"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_zstd_bodies() {
        let text = b"{\"a\": 1}\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        assert_eq!(decompress(Some("gzip"), gz.clone(), 10_000).unwrap(), text);
        assert!(matches!(decompress(Some("gzip"), gz, 100), Err(Error::TooLarge { limit: 100 })));
        let zst = Bytes::from(zstd::encode_all(&text[..], 1).unwrap());
        assert_eq!(decompress(Some("zstd"), zst, 10_000).unwrap(), text);
        let err = decompress(Some("gzip"), Bytes::from_static(b"not gzip"), 100).unwrap_err();
        assert!(err.to_string().starts_with("the body is not valid gzip"), "{err}");
        assert!(matches!(
            decompress(Some("br"), Bytes::new(), 1),
            Err(Error::UnsupportedMediaType(_))
        ));
    }
}
