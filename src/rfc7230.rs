//! Port of waitress/rfc7230.py.
//!
//! The pieces of the HTTP/1.1 message grammar (RFC 7230 §3.2, §4.1.1) that the parser, the
//! chunked receiver and the proxy-header code check input against. waitress writes them as
//! regular expressions; here each production is a small function over bytes, driven by a
//! lookup table, so that no input can make a check slow.
//!
//! One deliberate difference: Python's `$` also matches just before a final `\n`, so waitress's
//! `ONLY_DIGIT_RE` and `ONLY_HEXDIG_RE` accept `"12\n"`. These functions do not.

/// Bit flags of the byte classes, one table entry per byte value.
const TCHAR: u8 = 1;
const VCHAR: u8 = 2;
const OBS_TEXT: u8 = 4;
const QDTEXT: u8 = 8;
const HEXDIG: u8 = 16;
const DIGIT: u8 = 32;

/// The class table: built at compile time from the ABNF so that every check is one lookup.
static CLASSES: [u8; 256] = build_classes();

const fn build_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let mut flags = 0;
        // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
        //       / "|" / "~" / DIGIT / ALPHA
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            flags |= TCHAR;
        }
        // VCHAR = %x21-7E
        if c >= 0x21 && c <= 0x7e {
            flags |= VCHAR;
        }
        // obs-text = %x80-FF
        if c >= 0x80 {
            flags |= OBS_TEXT;
        }
        // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (no DQUOTE, no backslash)
        if c == b'\t'
            || c == b' '
            || c == 0x21
            || (c >= 0x23 && c <= 0x5b)
            || (c >= 0x5d && c <= 0x7e)
            || c >= 0x80
        {
            flags |= QDTEXT;
        }
        if c.is_ascii_hexdigit() {
            flags |= HEXDIG;
        }
        if c.is_ascii_digit() {
            flags |= DIGIT;
        }
        table[b] = flags;
        b += 1;
    }
    table
}

fn has(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// `tchar`: a byte allowed in a token.
pub fn is_tchar(b: u8) -> bool {
    has(b, TCHAR)
}

/// `VCHAR`: a visible ASCII byte (`%x21-7E`).
pub fn is_vchar(b: u8) -> bool {
    has(b, VCHAR)
}

/// `obs-text`: a byte `%x80-FF`.
pub fn is_obs_text(b: u8) -> bool {
    has(b, OBS_TEXT)
}

/// `field-vchar = VCHAR / obs-text`.
pub fn is_field_vchar(b: u8) -> bool {
    has(b, VCHAR | OBS_TEXT)
}

/// `qdtext`: a byte allowed as-is inside a quoted-string.
pub fn is_qdtext(b: u8) -> bool {
    has(b, QDTEXT)
}

/// `SP / HTAB`: the whitespace of `OWS`.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `token = 1*tchar`.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// `1*HEXDIG`, the whole input (waitress: `ONLY_HEXDIG_RE`).
pub fn is_only_hexdig(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| has(b, HEXDIG))
}

/// `1*DIGIT`, the whole input (waitress: `ONLY_DIGIT_RE`).
pub fn is_only_digit(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| has(b, DIGIT))
}

/// Trim `OWS` (spaces and tabs) from both ends.
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// `field-value` as waitress reads it: empty, or field-vchars with single runs of SP/HTAB
/// between them (never at either end).
pub fn is_field_value(bytes: &[u8]) -> bool {
    match (bytes.first(), bytes.last()) {
        (None, _) => true,
        (Some(&first), Some(&last)) => {
            is_field_vchar(first)
                && is_field_vchar(last)
                && bytes.iter().all(|&b| is_field_vchar(b) || is_ws(b))
        }
        (Some(_), None) => unreachable!("a slice with a first byte has a last byte"),
    }
}

/// `header-field = field-name ":" OWS field-value OWS` (waitress: `HEADER_FIELD_RE`).
///
/// Returns the name and the value without the surrounding whitespace, or `None` when the line
/// does not match: no colon, a name that is not a token (which includes whitespace before the
/// colon), or a value with a control byte (NUL, CR, LF, DEL, …).
pub fn header_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return None;
    }
    let value = trim_ows(rest);
    is_field_value(value).then_some((name, value))
}

/// The length of the `quoted-string` at the start of `bytes`, the quotes included, or `None`
/// when `bytes` does not start with a complete one (waitress: `QUOTED_STRING_RE.match`).
pub fn quoted_string_len(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                let escaped = *bytes.get(i + 1)?;
                if !(is_ws(escaped) || is_field_vchar(escaped)) {
                    return None;
                }
                i += 2;
            }
            b if is_qdtext(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// Replace every `quoted-pair` (`\` and the byte after it) by the byte alone, left to right
/// (waitress: `QUOTED_PAIR_RE.sub(r"\1", value)`). A backslash that does not start a valid pair
/// is kept.
pub fn unescape_quoted_pairs(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(&next) = bytes.get(i + 1) {
                if is_ws(next) || is_field_vchar(next) {
                    out.push(next);
                    i += 2;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `chunk-ext = *( ";" chunk-ext-name [ "=" chunk-ext-val ] )`, the whole input, with
/// `chunk-ext-name = token` and `chunk-ext-val = token / quoted-string` (waitress:
/// `CHUNK_EXT_RE`). No whitespace is allowed anywhere, as in waitress.
pub fn is_chunk_ext(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let after_semicolon = match rest.strip_prefix(b";") {
            Some(after) => after,
            None => return false,
        };
        let name_len = after_semicolon
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(after_semicolon.len());
        if name_len == 0 {
            return false;
        }
        rest = &after_semicolon[name_len..];
        if let Some(value) = rest.strip_prefix(b"=") {
            let value_len = if value.first() == Some(&b'"') {
                match quoted_string_len(value) {
                    Some(n) => n,
                    None => return false,
                }
            } else {
                value
                    .iter()
                    .position(|&b| !is_tchar(b))
                    .unwrap_or(value.len())
            };
            if value_len == 0 {
                return false;
            }
            rest = &value[value_len..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_accepts_exactly_the_abnf_set() {
        let expected: Vec<u8> =
            b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                .to_vec();
        let mut got: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        got.sort_unstable();
        let mut want = expected;
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn token_rejects_empty_space_and_separators() {
        assert!(is_token(b"Content-Type"));
        assert!(!is_token(b""));
        assert!(!is_token(b"Content Type"));
        assert!(!is_token(b"a:b"));
        assert!(!is_token(b"a\x00"));
        assert!(!is_token(b"caf\xe9"));
    }

    #[test]
    fn only_digit_and_hexdig() {
        assert!(is_only_digit(b"0123"));
        assert!(!is_only_digit(b""));
        assert!(!is_only_digit(b"+1"));
        assert!(!is_only_digit(b" 1"));
        assert!(!is_only_digit(b"0x1"));
        assert!(!is_only_digit(b"12\n"));
        assert!(is_only_hexdig(b"0aF9"));
        assert!(!is_only_hexdig(b"0x1"));
        assert!(!is_only_hexdig(b"-1"));
        assert!(!is_only_hexdig(b"a\n"));
    }

    #[test]
    fn header_field_splits_and_trims() {
        assert_eq!(
            header_field(b"Host: example.com"),
            Some((&b"Host"[..], &b"example.com"[..]))
        );
        assert_eq!(
            header_field(b"X-A:\t  a  b \t"),
            Some((&b"X-A"[..], &b"a  b"[..]))
        );
        assert_eq!(header_field(b"X-Empty:"), Some((&b"X-Empty"[..], &b""[..])));
        assert_eq!(
            header_field(b"X-Empty:   "),
            Some((&b"X-Empty"[..], &b""[..]))
        );
        assert_eq!(
            header_field(b"X-Obs: caf\xe9"),
            Some((&b"X-Obs"[..], &b"caf\xe9"[..]))
        );
        assert_eq!(
            header_field(b"X-Colon: a:b"),
            Some((&b"X-Colon"[..], &b"a:b"[..]))
        );
    }

    #[test]
    fn header_field_rejects_what_waitress_rejects() {
        // whitespace between the name and the colon
        assert_eq!(header_field(b"Host : example.com"), None);
        // no colon, empty name
        assert_eq!(header_field(b"Host example.com"), None);
        assert_eq!(header_field(b": value"), None);
        // control bytes in the value: NUL, CR, LF, DEL, other CTLs
        assert_eq!(header_field(b"X: a\x00b"), None);
        assert_eq!(header_field(b"X: a\rb"), None);
        assert_eq!(header_field(b"X: a\nb"), None);
        assert_eq!(header_field(b"X: a\x7fb"), None);
        assert_eq!(header_field(b"X: a\x01"), None);
        // HTAB is allowed inside a value
        assert!(header_field(b"X: a\tb").is_some());
    }

    #[test]
    fn quoted_string_matches_a_prefix() {
        assert_eq!(quoted_string_len(b"\"abc\""), Some(5));
        assert_eq!(quoted_string_len(b"\"a\\\"b\" tail"), Some(6));
        assert_eq!(quoted_string_len(b"\"\""), Some(2));
        assert_eq!(quoted_string_len(b"\"unterminated"), None);
        assert_eq!(quoted_string_len(b"abc"), None);
        assert_eq!(quoted_string_len(b"\"a\x00\""), None);
        assert_eq!(quoted_string_len(b"\"a\\\x00\""), None);
        assert_eq!(quoted_string_len(b"\"obs\xff\""), Some(6));
    }

    #[test]
    fn unescape_quoted_pairs_drops_the_backslashes() {
        assert_eq!(unescape_quoted_pairs(b"a\\\"b\\\\c"), b"a\"b\\c");
        assert_eq!(unescape_quoted_pairs(b"trailing\\"), b"trailing\\");
        assert_eq!(unescape_quoted_pairs(b"ctl\\\x01"), b"ctl\\\x01");
    }

    #[test]
    fn chunk_ext_grammar() {
        assert!(is_chunk_ext(b""));
        assert!(is_chunk_ext(b";a"));
        assert!(is_chunk_ext(b";a=b;c=\"d e\";f"));
        assert!(!is_chunk_ext(b"a"));
        assert!(!is_chunk_ext(b";"));
        assert!(!is_chunk_ext(b";a="));
        assert!(!is_chunk_ext(b"; a"));
        assert!(!is_chunk_ext(b";a =b"));
        assert!(!is_chunk_ext(b";a=\"unterminated"));
        assert!(!is_chunk_ext(b";a=b\x00"));
    }
}
