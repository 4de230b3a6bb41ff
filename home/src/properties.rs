//! A `java.util.Properties` codec, so that `modules-info.properties` stays
//! readable and writable by both this program and the original Java box.
//!
//! The reader is a port of Java 17's `Properties.load(InputStream)`: bytes
//! are ISO-8859-1, `#`/`!` comment lines, `=`, `:` or white space between
//! key and value, backslash escapes, `\uXXXX` (surrogate pairs combine),
//! and lines continued by a trailing backslash. The writer produces what
//! `Properties.store(OutputStream, comments)` writes, minus the date
//! comment line that Java adds (it is a comment; readers ignore it).
//!
//! Work is done on UTF-16 code units, as Java does, so that escapes and
//! surrogate pairs behave exactly as in Java. Where Java would hold a lone
//! surrogate, which a Rust `String` cannot, the reader returns an error.

use thiserror::Error;

/// Why a properties text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PropertiesError {
    /// A `\u` escape not followed by four hex digits (Java throws
    /// `IllegalArgumentException: Malformed \uxxxx encoding.`).
    #[error("malformed \\uxxxx escape {escape:?} on line {line}")]
    MalformedUnicodeEscape {
        /// Line (1-based) where the logical line holding the escape starts.
        line: usize,
        /// The escape as written, up to six characters.
        escape: String,
    },
    /// A key or value whose escapes decode to a UTF-16 surrogate without
    /// its pair; Java accepts it, a Rust string cannot hold it.
    #[error("unpaired UTF-16 surrogate {unit:#06X} on line {line}")]
    UnpairedSurrogate {
        /// Line (1-based) where the logical line holding it starts.
        line: usize,
        /// The first unpaired code unit.
        unit: u16,
    },
}

const LF: u16 = b'\n' as u16;
const CR: u16 = b'\r' as u16;
const BACKSLASH: u16 = b'\\' as u16;

fn is_blank(c: u16) -> bool {
    c == u16::from(b' ') || c == u16::from(b'\t') || c == 0x0C
}

/// Reads a properties file given as bytes, as `Properties.load(InputStream)`
/// does (each byte is one ISO-8859-1 character).
///
/// Entries keep the order of their first appearance; a repeated key keeps
/// that position and takes the last value, as loading into a map would.
pub fn read(bytes: &[u8]) -> Result<Vec<(String, String)>, PropertiesError> {
    let units: Vec<u16> = bytes.iter().map(|&b| u16::from(b)).collect();
    load(&units)
}

/// Reads a properties text given as characters, as
/// `Properties.load(Reader)` does.
pub fn read_str(text: &str) -> Result<Vec<(String, String)>, PropertiesError> {
    let units: Vec<u16> = text.encode_utf16().collect();
    load(&units)
}

/// Writes entries in order as `Properties.store(OutputStream, comment)`
/// does, without the date line: ISO-8859-1 bytes, with every character of
/// keys and values outside printable ASCII written as `\uXXXX`.
pub fn write(entries: &[(String, String)], comment: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(comment) = comment {
        write_comment(&mut out, comment);
    }
    for (key, value) in entries {
        save_convert(&mut out, key, true);
        out.push(b'=');
        save_convert(&mut out, value, false);
        out.push(b'\n');
    }
    out
}

/// Port of Java's `Properties.writeComments`: characters above U+00FF are
/// escaped, line breaks start a new comment line unless the next character
/// already starts one.
fn write_comment(out: &mut Vec<u8>, comment: &str) {
    let units: Vec<u16> = comment.encode_utf16().collect();
    out.push(b'#');
    let mut i = 0;
    while i < units.len() {
        let c = units[i];
        if c > 0xFF {
            push_unicode_escape(out, c);
        } else if c == LF || c == CR {
            out.push(b'\n');
            if c == CR && units.get(i + 1) == Some(&LF) {
                i += 1;
            }
            match units.get(i + 1) {
                Some(&next) if next == u16::from(b'#') || next == u16::from(b'!') => {}
                _ => out.push(b'#'),
            }
        } else {
            // At most U+00FF here: one ISO-8859-1 byte, as Java writes it.
            out.push(c as u8);
        }
        i += 1;
    }
    out.push(b'\n');
}

/// Port of Java's `Properties.saveConvert` with `escapeUnicode = true`.
fn save_convert(out: &mut Vec<u8>, text: &str, escape_space: bool) {
    for (i, c) in text.encode_utf16().enumerate() {
        match c {
            // Printable ASCII past '=' (61) needs no escape except '\'.
            0x3E..=0x7E => {
                if c == BACKSLASH {
                    out.push(b'\\');
                }
                out.push(c as u8);
            }
            0x20 => {
                if i == 0 || escape_space {
                    out.push(b'\\');
                }
                out.push(b' ');
            }
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0D => out.extend_from_slice(b"\\r"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x3D | 0x3A | 0x23 | 0x21 => {
                out.push(b'\\');
                out.push(c as u8);
            }
            0x21..=0x7E => out.push(c as u8),
            _ => push_unicode_escape(out, c),
        }
    }
}

fn push_unicode_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xF)]);
    }
}

/// Port of Java's `Properties.load0`: split each logical line into key and
/// value, then unescape both.
fn load(units: &[u16]) -> Result<Vec<(String, String)>, PropertiesError> {
    let mut reader = LineReader {
        input: units,
        pos: 0,
        line: 1,
        skip_lf: false,
    };
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut buf = Vec::new();
    while let Some(line) = reader.read_line(&mut buf) {
        let limit = buf.len();
        let mut key_len = 0;
        let mut value_start = limit;
        let mut has_sep = false;
        let mut preceding_backslash = false;
        while key_len < limit {
            let c = buf[key_len];
            if (c == u16::from(b'=') || c == u16::from(b':')) && !preceding_backslash {
                value_start = key_len + 1;
                has_sep = true;
                break;
            } else if is_blank(c) && !preceding_backslash {
                value_start = key_len + 1;
                break;
            }
            preceding_backslash = c == BACKSLASH && !preceding_backslash;
            key_len += 1;
        }
        while value_start < limit {
            let c = buf[value_start];
            if !is_blank(c) {
                if !has_sep && (c == u16::from(b'=') || c == u16::from(b':')) {
                    has_sep = true;
                } else {
                    break;
                }
            }
            value_start += 1;
        }
        let key = load_convert(&buf[..key_len], line)?;
        let value = load_convert(&buf[value_start..], line)?;
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }
    Ok(entries)
}

/// Port of Java's `Properties.loadConvert`, then UTF-16 to a string.
fn load_convert(input: &[u16], line: usize) -> Result<String, PropertiesError> {
    let mut out: Vec<u16> = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        i += 1;
        if c != BACKSLASH {
            out.push(c);
            continue;
        }
        // The line reader drops an unescaped trailing backslash, so one
        // always follows; stay total anyway.
        let Some(&escaped) = input.get(i) else {
            break;
        };
        i += 1;
        out.push(match u8::try_from(escaped) {
            Ok(b'u') => {
                let digits = input.get(i..i + 4);
                let value = digits.and_then(|d| {
                    d.iter().try_fold(0u16, |acc, &h| {
                        let digit = char::from_u32(u32::from(h))?.to_digit(16)?;
                        Some((acc << 4) | digit as u16)
                    })
                });
                let Some(value) = value else {
                    let end = (i + 4).min(input.len());
                    return Err(PropertiesError::MalformedUnicodeEscape {
                        line,
                        escape: format!("\\u{}", String::from_utf16_lossy(&input[i..end])),
                    });
                };
                i += 4;
                value
            }
            Ok(b't') => u16::from(b'\t'),
            Ok(b'r') => CR,
            Ok(b'n') => LF,
            Ok(b'f') => 0x0C,
            _ => escaped,
        });
    }
    char::decode_utf16(out.iter().copied())
        .collect::<Result<String, _>>()
        .map_err(|e| PropertiesError::UnpairedSurrogate {
            line,
            unit: e.unpaired_surrogate(),
        })
}

/// Port of Java 17's `Properties.LineReader`: yields logical lines with
/// comments, blank lines, leading white space and continuations resolved.
struct LineReader<'a> {
    input: &'a [u16],
    pos: usize,
    /// Natural line number (1-based) of the character at `pos`.
    line: usize,
    skip_lf: bool,
}

impl LineReader<'_> {
    fn next_unit(&mut self) -> Option<u16> {
        let c = *self.input.get(self.pos)?;
        self.pos += 1;
        if c == LF || (c == CR && self.input.get(self.pos) != Some(&LF)) {
            self.line += 1;
        }
        Some(c)
    }

    /// Fills `buf` with the next logical line and returns the number of the
    /// natural line it starts on, or `None` at the end of input.
    fn read_line(&mut self, buf: &mut Vec<u16>) -> Option<usize> {
        buf.clear();
        let mut start_line = self.line;
        let mut skip_white_space = true;
        let mut appended_line_begin = false;
        let mut preceding_backslash = false;
        loop {
            let line_of_c = self.line;
            let Some(c) = self.next_unit() else {
                if buf.is_empty() {
                    return None;
                }
                if preceding_backslash {
                    buf.pop();
                }
                return Some(start_line);
            };
            if self.skip_lf {
                self.skip_lf = false;
                if c == LF {
                    continue;
                }
            }
            if skip_white_space {
                if is_blank(c) {
                    continue;
                }
                if !appended_line_begin && (c == CR || c == LF) {
                    continue;
                }
                skip_white_space = false;
                appended_line_begin = false;
            }
            if buf.is_empty() {
                if c == u16::from(b'#') || c == u16::from(b'!') {
                    // A comment: consume the rest of the natural line.
                    loop {
                        match self.next_unit() {
                            None => return None,
                            Some(CR | LF) => break,
                            Some(_) => {}
                        }
                    }
                    skip_white_space = true;
                    continue;
                }
                start_line = line_of_c;
            }
            if c != LF && c != CR {
                buf.push(c);
                preceding_backslash = c == BACKSLASH && !preceding_backslash;
                continue;
            }
            // End of a natural line.
            if buf.is_empty() {
                skip_white_space = true;
                continue;
            }
            if self.pos >= self.input.len() {
                if preceding_backslash {
                    buf.pop();
                }
                return Some(start_line);
            }
            if !preceding_backslash {
                return Some(start_line);
            }
            // A backslash at the end of the line continues it: drop the
            // backslash and the next line's leading white space.
            buf.pop();
            skip_white_space = true;
            appended_line_begin = true;
            preceding_backslash = false;
            if c == CR {
                self.skip_lf = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_store_writes_for_module_keys() {
        let text = b"#Installed modules\n#Sun Mar 01 10:15:30 UTC 2026\n\
            com.banalytics.box\\:core\\:1.0.0=core\\:1772360130\n";
        assert_eq!(
            read(text).unwrap(),
            entries(&[("com.banalytics.box:core:1.0.0", "core:1772360130")])
        );
    }

    #[test]
    fn reads_plain_unescaped_keys_split_at_first_separator() {
        // An unescaped ':' ends the key: Java reads this key as "g", which is
        // why store escapes it.
        assert_eq!(
            read(b"g:a:1=core:5").unwrap(),
            entries(&[("g", "a:1=core:5")])
        );
        assert_eq!(read(b"key value").unwrap(), entries(&[("key", "value")]));
        assert_eq!(
            read(b"key : value ").unwrap(),
            entries(&[("key", "value ")])
        );
        assert_eq!(
            read(b"key = = value").unwrap(),
            entries(&[("key", "= value")])
        );
        assert_eq!(read(b"  key\t\x0c:\tv").unwrap(), entries(&[("key", "v")]));
        assert_eq!(read(b"lonely").unwrap(), entries(&[("lonely", "")]));
    }

    #[test]
    fn skips_comments_and_blank_lines() {
        let text = b"# c1\n  ! c2\n\n   \r\nk=v\r\n#trailing comment";
        assert_eq!(read(text).unwrap(), entries(&[("k", "v")]));
    }

    #[test]
    fn decodes_escapes_including_surrogate_pairs() {
        let text = b"a\\ b\\=\\:\\#=\\t\\n\\r\\f\\\\\\q\\u00e9\\uD83D\\uDE00";
        assert_eq!(
            read(text).unwrap(),
            entries(&[("a b=:#", "\t\n\r\x0c\\q\u{e9}\u{1F600}")])
        );
    }

    #[test]
    fn reads_bytes_as_iso_8859_1() {
        assert_eq!(read(b"k=caf\xe9").unwrap(), entries(&[("k", "caf\u{e9}")]));
    }

    #[test]
    fn joins_continued_lines_dropping_leading_white_space() {
        let text = b"k = one \\\n    two\\\r\n\tthree\nx=\\\n";
        assert_eq!(
            read(text).unwrap(),
            entries(&[("k", "one twothree"), ("x", "")])
        );
        // An even number of backslashes is an escaped backslash, not a
        // continuation.
        assert_eq!(
            read(b"k=a\\\\\nb=c").unwrap(),
            entries(&[("k", "a\\"), ("b", "c")])
        );
        // A comment character on a continuation line is data.
        assert_eq!(read(b"k=a\\\n  #b").unwrap(), entries(&[("k", "a#b")]));
    }

    #[test]
    fn repeated_key_keeps_first_position_and_last_value() {
        assert_eq!(
            read(b"a=1\nb=2\na=3").unwrap(),
            entries(&[("a", "3"), ("b", "2")])
        );
    }

    #[test]
    fn malformed_unicode_escape_is_an_error_value_with_line() {
        let err = read(b"ok=1\n\nk=\\u12G4").unwrap_err();
        assert_eq!(
            err,
            PropertiesError::MalformedUnicodeEscape {
                line: 3,
                escape: "\\u12G4".into()
            }
        );
        assert!(matches!(
            read(b"k=\\u12"),
            Err(PropertiesError::MalformedUnicodeEscape { .. })
        ));
    }

    #[test]
    fn unpaired_surrogate_is_an_error_value() {
        assert_eq!(
            read(b"k=\\uD800x").unwrap_err(),
            PropertiesError::UnpairedSurrogate {
                line: 1,
                unit: 0xD800
            }
        );
    }

    #[test]
    fn writes_like_store() {
        let out = write(
            &entries(&[
                ("com.banalytics.box:core:1.0.0", "core:1772360130"),
                (" lead=#!", " lead kept, inner  not\\"),
                ("tab\tnl\ncr\rff\x0c", "caf\u{e9} \u{1F600}\u{7f}"),
            ]),
            Some("Installed modules"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "#Installed modules\n\
             com.banalytics.box\\:core\\:1.0.0=core\\:1772360130\n\
             \\ lead\\=\\#\\!=\\ lead kept, inner  not\\\\\n\
             tab\\tnl\\ncr\\rff\\f=caf\\u00E9 \\uD83D\\uDE00\\u007F\n"
        );
    }

    #[test]
    fn writes_multi_line_comments_like_store() {
        let out = write(&[], Some("one\r\ntwo\n#three\n\u{263A}\u{e9}"));
        assert_eq!(out, b"#one\n#two\n#three\n#\\u263A\xe9\n");
    }

    proptest! {
        #[test]
        fn write_then_read_round_trips(
            map in proptest::collection::btree_map("\\PC*|[ :=#!\\\\\t\r\n\x0c\u{e9}\u{1F600}a]{0,8}", "\\PC*|[ :=#!\\\\\t\r\n\x0c\u{e9}\u{1F600}a]{0,8}", 0..8),
            comment in proptest::option::of("\\PC{0,20}|[#!\r\n a]{0,8}"),
        ) {
            let entries: Vec<(String, String)> = map.into_iter().collect();
            let bytes = write(&entries, comment.as_deref());
            prop_assert_eq!(read(&bytes).unwrap(), entries);
        }

        #[test]
        fn reader_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read(&bytes);
        }

        #[test]
        fn reader_never_panics_on_properties_like_bytes(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"\\u0aD8 \t\x0c\r\n=:#!k".to_vec()), 0..60)
        ) {
            let _ = read(&bytes);
        }
    }
}
