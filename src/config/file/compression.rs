//! `[cache.compression]`: one compressed copy per stored object (what is compressed, how hard),
//! and its validation.

use serde::{Deserialize, Serialize};

use super::size;

/// `[cache.compression]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionSection {
    /// Compress identity responses once when they are stored.
    pub enabled: bool,
    /// `"gzip"` or `"br"` (`"zstd"` is refused: this build has no zstd codec).
    pub encoding: String,
    /// Compression level: 1–9 for gzip, 0–11 for br.
    pub level: u32,
    /// Media types compressed: `type/subtype` or `type/*`, matched without parameters.
    pub types: Vec<String>,
    /// Smaller bodies are stored as they came.
    #[serde(with = "size")]
    pub min_size: u64,
}

impl Default for CompressionSection {
    fn default() -> Self {
        Self {
            enabled: true,
            encoding: "gzip".into(),
            level: 1,
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/ld+json",
                "application/manifest+json",
                "application/wasm",
                "image/svg+xml",
                "font/ttf",
                "font/otf",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            min_size: 1024,
        }
    }
}

impl CompressionSection {
    /// The first bad key (relative to `cache.compression`) and what is wrong with it.
    pub fn check(&self) -> Result<(), (String, String)> {
        let max_level = match self.encoding.as_str() {
            "gzip" => 9,
            "br" => 11,
            "zstd" => {
                return Err((
                    "encoding".into(),
                    "\"zstd\" is not supported by this build; use \"gzip\" or \"br\"".into(),
                ));
            }
            other => {
                return Err((
                    "encoding".into(),
                    format!("{other:?} is not one of \"gzip\", \"br\""),
                ));
            }
        };
        let min_level = u32::from(self.encoding == "gzip");
        if !(min_level..=max_level).contains(&self.level) {
            return Err((
                "level".into(),
                format!(
                    "{} for {:?} must be between {min_level} and {max_level}",
                    self.level, self.encoding
                ),
            ));
        }
        for (i, t) in self.types.iter().enumerate() {
            let ok = t.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                token(a) && (b == "*" || token(b))
            });
            if !ok {
                return Err((
                    format!("types[{i}]"),
                    format!("{t:?} is not a media type such as \"text/*\" or \"application/json\""),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_key() {
        assert!(CompressionSection::default().check().is_ok());
        let bad = |f: fn(&mut CompressionSection)| {
            let mut s = CompressionSection::default();
            f(&mut s);
            s.check().err().map(|(k, _)| k)
        };
        assert_eq!(
            bad(|s| s.encoding = "zstd".into()).as_deref(),
            Some("encoding")
        );
        assert_eq!(
            bad(|s| s.encoding = "lzma".into()).as_deref(),
            Some("encoding")
        );
        assert_eq!(bad(|s| s.level = 0).as_deref(), Some("level"));
        assert_eq!(
            bad(|s| {
                s.encoding = "br".into();
                s.level = 0;
            }),
            None
        );
        assert_eq!(
            bad(|s| {
                s.encoding = "br".into();
                s.level = 12;
            })
            .as_deref(),
            Some("level")
        );
        assert_eq!(
            bad(|s| s.types.push("json".into())).as_deref(),
            Some("types[13]")
        );
    }
}
