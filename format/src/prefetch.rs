//! Prefetch list files (docs/format.md §3.6): reading what a mount with `-o record=FILE` wrote,
//! and turning its digests into an image's [`Image::prefetch`] list.
//!
//! ```
//! use chunkfs_format::prefetch;
//! let digests = prefetch::parse("# recorded\nsha256:".to_owned() + &"ab".repeat(32) + "\n")?;
//! assert_eq!(digests.len(), 1);
//! # Ok::<(), prefetch::ParseError>(())
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::model::{ChunkIdx, Image, limits};

/// Longest line accepted: a digest line is 71 bytes; comments may be longer, not unboundedly.
pub const LINE_MAX: usize = 4096;

/// A line of a prefetch list that is neither a comment nor a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub problem: String,
}

/// Why a prefetch list file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{}: cannot read the prefetch list: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed, or there are more lines than an image can have chunks.
    #[error("{}: not a prefetch list (docs/format.md §3.6): {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong.
        source: ParseError,
    },
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Self::Read { source, .. } => crate::Classify::class(source),
            // The caller named a file that is not a prefetch list.
            Self::Parse { .. } => crate::ErrorClass::Usage,
        }
    }
}

/// Parses the text of a prefetch list: its digests, in order, repeats included.
pub fn parse(text: impl AsRef<str>) -> Result<Vec<Digest>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.as_ref().lines().enumerate() {
        if let Some(d) = parse_line(i + 1, line)? {
            push_bounded(&mut out, d, i + 1)?;
        }
    }
    Ok(out)
}

/// Reads and parses the prefetch list file `path`. Memory is bounded by the number of digests
/// (at most [`limits::CHUNKS_MAX`]), whatever the file holds.
pub fn read(path: &Path) -> Result<Vec<Digest>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let parse_err = |source| Error::Parse {
        path: path.to_owned(),
        source,
    };
    let mut r = BufReader::new(std::fs::File::open(path).map_err(read_err)?);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for line in 1usize.. {
        buf.clear();
        let n = (&mut r)
            .take(LINE_MAX as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(read_err)?;
        if n == 0 {
            break;
        }
        if buf.len() > LINE_MAX && buf.last() != Some(&b'\n') {
            return Err(parse_err(ParseError {
                line,
                problem: format!("longer than {LINE_MAX} bytes"),
            }));
        }
        let text = std::str::from_utf8(&buf).map_err(|_| {
            parse_err(ParseError {
                line,
                problem: "not UTF-8".into(),
            })
        })?;
        if let Some(d) = parse_line(line, text).map_err(parse_err)? {
            push_bounded(&mut out, d, line).map_err(parse_err)?;
        }
    }
    Ok(out)
}

fn parse_line(line: usize, text: &str) -> Result<Option<Digest>, ParseError> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let hex = t.strip_prefix("sha256:").filter(|h| h.len() == 64);
    match hex.and_then(|h| Digest::from_hex(&h.to_ascii_lowercase())) {
        Some(d) => Ok(Some(d)),
        None => Err(ParseError {
            line,
            problem: format!(
                "expected sha256: and 64 hexadecimal digits, or a # comment; found {:?}",
                t.chars().take(80).collect::<String>()
            ),
        }),
    }
}

fn push_bounded(out: &mut Vec<Digest>, d: Digest, line: usize) -> Result<(), ParseError> {
    if out.len() >= limits::CHUNKS_MAX {
        return Err(ParseError {
            line,
            problem: format!("more than {} digests", limits::CHUNKS_MAX),
        });
    }
    out.push(d);
    Ok(())
}

/// What [`apply`] made of a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Digests in the list, repeats included.
    pub listed: usize,
    /// Chunks of the image it named: the length of the image's prefetch list.
    pub kept: usize,
    /// Digests the image has no chunk for (skipped).
    pub missing: usize,
    /// Later mentions of a digest already listed (skipped).
    pub repeated: usize,
}

/// The chunk numbers of `image` that `digests` name, in the list's order, each once: what
/// becomes [`Image::prefetch`]. Digests the image does not have are skipped and counted.
pub fn resolve(image: &Image, digests: &[Digest]) -> (Vec<ChunkIdx>, Applied) {
    let index: HashMap<&Digest, ChunkIdx> = image
        .chunks
        .iter()
        .zip(0..)
        .map(|(c, i)| (&c.digest, i))
        .collect();
    let mut taken = vec![false; image.chunks.len()];
    let mut applied = Applied {
        listed: digests.len(),
        ..Applied::default()
    };
    let mut out = Vec::new();
    for d in digests {
        match index.get(d) {
            None => applied.missing += 1,
            Some(&i) => match taken.get_mut(i as usize) {
                Some(t) if !*t => {
                    *t = true;
                    out.push(i);
                }
                _ => applied.repeated += 1,
            },
        }
    }
    applied.kept = out.len();
    (out, applied)
}

/// Replaces `image`'s prefetch list with the chunks `digests` name ([`resolve`]).
pub fn apply(image: &mut Image, digests: &[Digest]) -> Applied {
    let (list, applied) = resolve(image, digests);
    image.prefetch = list;
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChunkInfo;

    fn image(n: u32) -> Image {
        Image {
            chunks: (0..n)
                .map(|i| ChunkInfo {
                    digest: Digest::of(&i.to_le_bytes()),
                    size: 1,
                })
                .collect(),
            ..Image::default()
        }
    }

    #[test]
    fn parses_digests_comments_and_blanks() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let text = format!(
            "# chunkfs prefetch list\n\n  {}  \r\n#{}\nsha256:{}\n{}",
            a,
            b,
            b.to_hex().to_uppercase(),
            a
        );
        assert_eq!(parse(&text).unwrap(), vec![a, b, a]);
        let bad_lines: [(String, usize); 4] = [
            ("sha256:abc\n".into(), 1),
            (format!("# ok\nsha512:{}", "0".repeat(64)), 2),
            (format!("\n\n{}", "g".repeat(64)), 3),
            (format!("sha256:{} trailing", "0".repeat(64)), 1),
        ];
        for (bad, line) in bad_lines {
            let e = parse(&bad).unwrap_err();
            assert_eq!(e.line, line, "{bad:?}: {e}");
            assert!(e.problem.contains("64 hexadecimal"), "{e}");
        }
    }

    #[test]
    fn reads_files_and_bounds_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let d = Digest::of(b"x");
        std::fs::write(&good, format!("# c\n{d}\n{d}")).unwrap();
        assert_eq!(read(&good).unwrap(), vec![d, d]);
        let long = dir.path().join("long");
        std::fs::write(&long, format!("{d}\n#{}", "x".repeat(LINE_MAX + 10))).unwrap();
        match read(&long) {
            Err(Error::Parse { source, .. }) => {
                assert_eq!(source.line, 2);
                assert!(source.problem.contains("longer"), "{source}");
            }
            other => panic!("a line without end must be refused: {other:?}"),
        }
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"\xff\xfe\n").unwrap();
        assert!(matches!(read(&binary), Err(Error::Parse { .. })));
        let missing = dir.path().join("missing");
        let e = read(&missing).unwrap_err();
        assert_eq!(crate::Classify::class(&e), crate::ErrorClass::Io);
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn resolve_keeps_known_chunks_in_order_once() {
        let img = image(5);
        let d = |i: u32| img.chunks[i as usize].digest;
        let unknown = Digest::of(b"not in the image");
        let (list, applied) = resolve(&img, &[d(3), unknown, d(0), d(3), d(4), unknown]);
        assert_eq!(list, vec![3, 0, 4]);
        assert_eq!(
            applied,
            Applied {
                listed: 6,
                kept: 3,
                missing: 2,
                repeated: 1
            }
        );
        let mut with = img.clone();
        apply(&mut with, &[d(1), d(2)]);
        assert_eq!(with.prefetch, vec![1, 2]);
        apply(&mut with, &[]);
        assert!(with.prefetch.is_empty());
    }
}
