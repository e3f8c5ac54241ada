//! Field names of response heads: the ones most responses carry, recognised without the general
//! parser.

use http::header::{self, HeaderName, InvalidHeaderName};

/// `raw` as a header name. The fields most responses carry, spelled as backends send them
/// (canonical case or lowercase), are recognised by one match on the bytes; any other name goes
/// to [`HeaderName::from_bytes`], which gives the same name for those too, only slower (it
/// lowercases and validates byte by byte first).
pub(crate) fn field_name(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let known = match raw {
        b"Server" | b"server" => header::SERVER,
        b"Date" | b"date" => header::DATE,
        b"Content-Type" | b"content-type" => header::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => header::CONTENT_LENGTH,
        b"Last-Modified" | b"last-modified" => header::LAST_MODIFIED,
        b"Connection" | b"connection" => header::CONNECTION,
        b"ETag" | b"Etag" | b"etag" => header::ETAG,
        b"Accept-Ranges" | b"accept-ranges" => header::ACCEPT_RANGES,
        b"Cache-Control" | b"cache-control" => header::CACHE_CONTROL,
        b"Expires" | b"expires" => header::EXPIRES,
        b"Vary" | b"vary" => header::VARY,
        b"Set-Cookie" | b"set-cookie" => header::SET_COOKIE,
        b"Location" | b"location" => header::LOCATION,
        b"Content-Encoding" | b"content-encoding" => header::CONTENT_ENCODING,
        b"Transfer-Encoding" | b"transfer-encoding" => header::TRANSFER_ENCODING,
        b"Age" | b"age" => header::AGE,
        b"Pragma" | b"pragma" => header::PRAGMA,
        b"Access-Control-Allow-Origin" | b"access-control-allow-origin" => {
            header::ACCESS_CONTROL_ALLOW_ORIGIN
        }
        b"Strict-Transport-Security" | b"strict-transport-security" => {
            header::STRICT_TRANSPORT_SECURITY
        }
        _ => return HeaderName::from_bytes(raw),
    };
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The names the match knows, canonical spelling.
    const KNOWN: [&str; 19] = [
        "Server",
        "Date",
        "Content-Type",
        "Content-Length",
        "Last-Modified",
        "Connection",
        "ETag",
        "Accept-Ranges",
        "Cache-Control",
        "Expires",
        "Vary",
        "Set-Cookie",
        "Location",
        "Content-Encoding",
        "Transfer-Encoding",
        "Age",
        "Pragma",
        "Access-Control-Allow-Origin",
        "Strict-Transport-Security",
    ];

    fn same_as_the_general_parser(raw: &[u8]) -> Result<(), TestCaseError> {
        match (field_name(raw), HeaderName::from_bytes(raw)) {
            (Ok(fast), Ok(general)) => prop_assert_eq!(fast, general),
            (Err(_), Err(_)) => {}
            (fast, general) => prop_assert!(false, "{raw:?}: {fast:?} against {general:?}"),
        }
        Ok(())
    }

    #[test]
    fn every_known_spelling_is_the_standard_name() {
        for name in KNOWN {
            let standard = HeaderName::from_bytes(name.as_bytes()).expect("valid");
            for spelling in [name.to_owned(), name.to_ascii_lowercase()] {
                assert_eq!(field_name(spelling.as_bytes()).expect("known"), standard);
            }
        }
    }

    proptest! {
        #[test]
        fn known_names_in_any_case_match_the_general_parser(
            index in 0..KNOWN.len(),
            upper in proptest::collection::vec(any::<bool>(), 32),
            suffix in "[a-zA-Z\\-: ]{0,2}",
        ) {
            let spelled: String = KNOWN[index]
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            same_as_the_general_parser(spelled.as_bytes())?;
            same_as_the_general_parser(format!("{spelled}{suffix}").as_bytes())?;
        }

        #[test]
        fn any_bytes_match_the_general_parser(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            same_as_the_general_parser(&raw)?;
        }
    }
}
