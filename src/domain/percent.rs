//! Percent-encoding the way FreeSWITCH writes it (`switch_url_encode`) and plain one-shot decoding.

use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, CONTROLS};

/// `switch_url_encode`'s escape set: controls, DEL and (implicitly) every byte > 0x7E, plus its
/// `urlunsafe` list. `! $ ' ( ) * , - . / _ ~`, letters and digits stay literal.
const FS_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Decodes `%XX` exactly once. `+` stays `+` (FreeSWITCH writes a literal plus as `%2B`, so form
/// decoding would corrupt it); malformed escapes stay literal; invalid UTF-8 becomes U+FFFD.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Encodes like `switch_url_encode_opt(.., double_encode = true)` (what current mod_xml_cdr uses
/// for its `cdr=` body): uppercase `%XX` for every unsafe byte, `%` included, so one
/// `percent_decode` always restores the input.
pub fn fs_url_encode(s: &[u8]) -> String {
    percent_encode(s, FS_UNSAFE).to_string()
}

/// Whether FreeSWITCH's encoder would have escaped `b`; a raw one proves text was not encoded.
pub(crate) fn fs_escapes(b: u8) -> bool {
    !(b.is_ascii_alphanumeric() || b"!$'()*,-./_~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_once_and_keeps_plus() {
        assert_eq!(percent_decode("%2B85516234567"), "+85516234567");
        assert_eq!(percent_decode("a+b%20c"), "a+b c");
        assert_eq!(percent_decode("%2540"), "%40");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("x%FFy"), "x\u{FFFD}y");
        assert_eq!(percent_decode("sofia/internal/1000%40192.168.6.32"), "sofia/internal/1000@192.168.6.32");
    }

    #[test]
    fn encodes_like_freeswitch() {
        assert_eq!(fs_url_encode(b"\"Mikey\" <1160>"), "%22Mikey%22%20%3C1160%3E");
        assert_eq!(fs_url_encode(b"2009-05-21 10:53:46"), "2009-05-21%2010%3A53%3A46");
        assert_eq!(fs_url_encode(b"a!$'()*,-./_~Z9"), "a!$'()*,-./_~Z9");
        assert_eq!(fs_url_encode(b"#%&+:;<=>?@[\\]^`{|}"), "%23%25%26%2B%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D");
        assert_eq!(fs_url_encode(b"\r\n\t\x7f\xc3\xa9"), "%0D%0A%09%7F%C3%A9");
        for b in 0u8..=255 {
            let literal = fs_url_encode(&[b]).len() == 1;
            assert_eq!(literal, !fs_escapes(b), "byte {b:#04x}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in any::<String>()) {
            let _ = percent_decode(&s);
        }

        #[test]
        fn encode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let e = fs_url_encode(&b);
            prop_assert!(e.bytes().all(|c| c == b'%' || !fs_escapes(c)));
        }

        #[test]
        fn decode_inverts_encode(s in any::<String>()) {
            prop_assert_eq!(percent_decode(&fs_url_encode(s.as_bytes())), s);
        }
    }
}
