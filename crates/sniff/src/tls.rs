//! The TLS ClientHello: reassembled from handshake records (any number, any TCP split), its fixed
//! fields stepped over, then its `server_name` (host_name) and ALPN extensions parsed with
//! `tls-parser`.
//!
//! Limits: records carry at most [`MAX_RECORD_PAYLOAD`] bytes each; the records carrying the
//! ClientHello end within [`MAX_CLIENT_HELLO`] bytes of the stream start. Work is linear in the bytes
//! received: [`HelloAssembler`] only ever looks at each complete record once.

use crate::{SniffError, MAX_CLIENT_HELLO};
use bulkhead_hostmatch::{normalize_host, HostError};
use tls_parser::nom;
use tls_parser::{
    parse_tls_extension_alpn_content, parse_tls_extension_sni_content, SNIType, TlsExtension,
};

/// Largest record payload accepted: 2^14 bytes of plaintext plus the 2048 bytes of expansion a
/// TLSCiphertext may carry (the same tolerance rustls applies when it reads records).
pub const MAX_RECORD_PAYLOAD: usize = (1 << 14) + 2048;

const RECORD_HEADER_LEN: usize = 5;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const RECORD_VERSION_MAJOR: u8 = 0x03;
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SNI_HOST_NAME: SNIType = SNIType(0);

/// What a ClientHello says about where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The `host_name` of the `server_name` extension, normalised; `None` when the client sent none.
    pub sni: Option<String>,
    /// The ALPN protocol names offered, in the client's order (lossy UTF-8).
    pub alpn: Vec<String>,
    /// Bytes from the stream start to the end of the last record carrying part of the ClientHello.
    pub hello_len: usize,
}

/// Whether the bytes start like a TLS handshake record (first byte `0x16`).
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&CONTENT_TYPE_HANDSHAKE)
}

/// Parses the ClientHello at the start of `buf` (TLS records from the first byte of the stream).
///
/// `Ok(None)` means more bytes are needed; an error is final whatever follows. Never reads past
/// [`MAX_CLIENT_HELLO`] bytes of records.
pub fn sniff_client_hello(buf: &[u8]) -> Result<Option<ClientHelloInfo>, SniffError> {
    HelloAssembler::default().advance(buf)
}

/// Incremental reassembly of the handshake bytes: remembers how far complete records were consumed,
/// so that feeding a growing buffer costs linear time in total.
#[derive(Debug, Default)]
pub(crate) struct HelloAssembler {
    /// Offset in the stream of the next record header.
    pos: usize,
    /// Handshake bytes reassembled so far (at most the ClientHello message).
    handshake: Vec<u8>,
    /// Length of the whole ClientHello message (header included), once its header was seen.
    message_len: Option<usize>,
}

impl HelloAssembler {
    /// Consumes the complete records of `buf` not seen yet. `buf` must be the same stream as in the
    /// previous calls, possibly longer.
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Result<Option<ClientHelloInfo>, SniffError> {
        match buf.first() {
            None => return Ok(None),
            Some(&b) if b != CONTENT_TYPE_HANDSHAKE => return Err(SniffError::NotTls),
            Some(_) => {}
        }
        if buf.get(1).is_some_and(|&v| v != RECORD_VERSION_MAJOR) {
            return Err(SniffError::NotTls);
        }
        loop {
            let header_end = self.pos + RECORD_HEADER_LEN;
            if header_end > MAX_CLIENT_HELLO {
                return Err(SniffError::TooLarge);
            }
            let Some(header) = buf.get(self.pos..header_end) else {
                return Ok(None);
            };
            if header[0] != CONTENT_TYPE_HANDSHAKE {
                return Err(SniffError::malformed(
                    "a non-handshake record came before the end of the ClientHello",
                ));
            }
            if header[1] != RECORD_VERSION_MAJOR {
                return Err(SniffError::malformed("record version is not 3.x"));
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len == 0 {
                return Err(SniffError::malformed("empty handshake record"));
            }
            if len > MAX_RECORD_PAYLOAD {
                return Err(SniffError::malformed("record longer than the TLS maximum"));
            }
            let end = header_end + len;
            if end > MAX_CLIENT_HELLO {
                return Err(SniffError::TooLarge);
            }
            let Some(payload) = buf.get(header_end..end) else {
                return Ok(None);
            };
            self.pos = end;
            if let Some(message) = self.push(payload)? {
                let (sni, alpn) = parse_client_hello(message)?;
                return Ok(Some(ClientHelloInfo {
                    sni,
                    alpn,
                    hello_len: end,
                }));
            }
        }
    }

    /// Appends one record's payload; returns the whole ClientHello message once it is complete.
    /// Bytes after the ClientHello in its last record (coalesced messages) are left to the TLS
    /// terminator to judge.
    fn push<'a>(&'a mut self, mut payload: &'a [u8]) -> Result<Option<&'a [u8]>, SniffError> {
        // Nearly every client sends the whole ClientHello in its first record: parsed where it
        // lies, without a copy. Anything else (split messages, a wrong type, too large) takes the
        // reassembling path below, which also says what is wrong.
        if self.handshake.is_empty() {
            if let Some(&[kind, a, b, c]) = payload.first_chunk::<HANDSHAKE_HEADER_LEN>() {
                let total = HANDSHAKE_HEADER_LEN
                    + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
                if kind == HANDSHAKE_CLIENT_HELLO && total <= MAX_CLIENT_HELLO {
                    if let Some(message) = payload.get(..total) {
                        return Ok(Some(message));
                    }
                }
            }
        }
        let total = match self.message_len {
            Some(total) => total,
            None => {
                let take = (HANDSHAKE_HEADER_LEN - self.handshake.len()).min(payload.len());
                self.handshake.extend_from_slice(&payload[..take]);
                payload = &payload[take..];
                let [kind, a, b, c] = self.handshake[..] else {
                    return Ok(None);
                };
                if kind != HANDSHAKE_CLIENT_HELLO {
                    return Err(SniffError::malformed(
                        "first handshake message is not a ClientHello",
                    ));
                }
                let body = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                let total = HANDSHAKE_HEADER_LEN + body;
                if total > MAX_CLIENT_HELLO {
                    return Err(SniffError::TooLarge);
                }
                self.message_len = Some(total);
                // One allocation for the whole message instead of growth as records arrive.
                self.handshake
                    .reserve_exact(total.saturating_sub(self.handshake.len()));
                total
            }
        };
        let take = (total - self.handshake.len()).min(payload.len());
        self.handshake.extend_from_slice(&payload[..take]);
        Ok((self.handshake.len() == total).then_some(&self.handshake[..]))
    }
}

/// Parses a complete ClientHello handshake message (4-byte header included).
fn parse_client_hello(message: &[u8]) -> Result<(Option<String>, Vec<String>), SniffError> {
    let body = &message[HANDSHAKE_HEADER_LEN..];
    let (ext, rest) = client_hello_extensions(body)?;
    if !rest.is_empty() {
        return Err(SniffError::malformed(
            "ClientHello has bytes after its extensions",
        ));
    }
    let mut extensions = ext.unwrap_or_default();
    let mut sni = None;
    let mut alpn = None;
    while !extensions.is_empty() {
        let (kind, data, rest) = split_extension(extensions)?;
        extensions = rest;
        match kind {
            EXT_SERVER_NAME => {
                if sni.is_some() {
                    return Err(SniffError::malformed("duplicate server_name extension"));
                }
                sni = Some(parse_server_name(data)?);
            }
            EXT_ALPN => {
                if alpn.is_some() {
                    return Err(SniffError::malformed("duplicate ALPN extension"));
                }
                alpn = Some(parse_alpn(data)?);
            }
            _ => {}
        }
    }
    Ok((sni.flatten(), alpn.unwrap_or_default()))
}

/// The extensions block of a ClientHello body (RFC 8446 §4.1.2) and what follows it: steps over
/// `legacy_version`, `random`, `legacy_session_id` (at most 32 bytes), `cipher_suites` (an even
/// length) and `legacy_compression_methods` with the checks `tls-parser`'s
/// `parse_tls_handshake_client_hello` makes (a property test holds the two equal), without
/// collecting the offered suites and methods into vectors, which the sniffer never reads. The block
/// is `None` when fewer than its two length bytes, or fewer bytes than they announce, follow.
fn client_hello_extensions(body: &[u8]) -> Result<(Option<&[u8]>, &[u8]), SniffError> {
    let truncated = |field| SniffError::Malformed(format!("ClientHello: truncated {field}"));
    // legacy_version and random.
    let rest = body.get(2 + 32..).ok_or_else(|| truncated("random"))?;
    let (&session_id_len, rest) = rest.split_first().ok_or_else(|| truncated("session id"))?;
    if session_id_len > 32 {
        return Err(SniffError::malformed(
            "ClientHello: session id longer than 32 bytes",
        ));
    }
    let rest = rest
        .get(usize::from(session_id_len)..)
        .ok_or_else(|| truncated("session id"))?;
    let (suites_len, rest) = split_u16(rest).ok_or_else(|| truncated("cipher suites"))?;
    if suites_len % 2 == 1 {
        return Err(SniffError::malformed(
            "ClientHello: odd cipher suites length",
        ));
    }
    let rest = rest
        .get(suites_len..)
        .ok_or_else(|| truncated("cipher suites"))?;
    let (&methods_len, rest) = rest
        .split_first()
        .ok_or_else(|| truncated("compression methods"))?;
    let rest = rest
        .get(usize::from(methods_len)..)
        .ok_or_else(|| truncated("compression methods"))?;
    if rest.is_empty() {
        return Ok((None, rest));
    }
    Ok(split_u16(rest)
        .and_then(|(len, after)| Some((after.get(..len)?, &after[len..])))
        .map_or((None, rest), |(block, after)| (Some(block), after)))
}

/// A big-endian `u16` length off the front of `bytes`, and the bytes after it.
fn split_u16(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    Some((usize::from(u16::from_be_bytes(*len)), rest))
}

/// Splits one extension (type, data) off the front of the extensions block.
fn split_extension(block: &[u8]) -> Result<(u16, &[u8], &[u8]), SniffError> {
    let truncated = || SniffError::malformed("truncated extension");
    let header = block.get(..4).ok_or_else(truncated)?;
    let kind = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let data = block.get(4..4 + len).ok_or_else(truncated)?;
    Ok((kind, data, &block[4 + len..]))
}

/// The one `host_name` of a `server_name` extension (RFC 6066), normalised.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, SniffError> {
    let (rest, ext) = parse_tls_extension_sni_content(data)
        .map_err(|e| SniffError::Malformed(format!("server_name: {}", nom_reason(&e))))?;
    let TlsExtension::SNI(names) = ext else {
        return Err(SniffError::malformed("server_name did not parse"));
    };
    if !rest.is_empty() {
        return Err(SniffError::malformed("bytes after the server_name list"));
    }
    let mut host_names = names.iter().filter(|(kind, _)| *kind == SNI_HOST_NAME);
    let Some((_, name)) = host_names.next() else {
        return Ok(None);
    };
    if host_names.next().is_some() {
        return Err(SniffError::malformed(
            "more than one host_name in server_name",
        ));
    }
    let name =
        std::str::from_utf8(name).map_err(|_| SniffError::malformed("server name is not ASCII"))?;
    if name.contains(':') {
        // A port is never part of an SNI; normalize_host would silently strip it.
        return Err(SniffError::BadHost(HostError::BadChar(':')));
    }
    normalize_host(name).map(Some).map_err(SniffError::BadHost)
}

/// The protocol names of an ALPN extension (RFC 7301).
fn parse_alpn(data: &[u8]) -> Result<Vec<String>, SniffError> {
    let (rest, ext) = parse_tls_extension_alpn_content(data)
        .map_err(|e| SniffError::Malformed(format!("ALPN: {}", nom_reason(&e))))?;
    if !rest.is_empty() {
        return Err(SniffError::malformed("bytes after the ALPN list"));
    }
    let TlsExtension::ALPN(names) = ext else {
        return Err(SniffError::malformed("ALPN did not parse"));
    };
    Ok(names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// A short description of a nom error, without the (untrusted, possibly large) input.
fn nom_reason(e: &nom::Err<nom::error::Error<&[u8]>>) -> String {
    match e {
        nom::Err::Incomplete(_) => "truncated".to_owned(),
        nom::Err::Error(e) | nom::Err::Failure(e) => e.code.description().to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A real ClientHello as rustls writes it (one or more records), for `sni` with `alpn` offered.
    pub(crate) fn rustls_client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).expect("valid name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write to a Vec");
        }
        out
    }

    /// Re-frames the handshake bytes of `records` into records of at most `sizes[i]` payload bytes
    /// (cycling through `sizes`), which is legal TLS.
    pub(crate) fn reframe(records: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut handshake = Vec::new();
        let mut pos = 0;
        while pos + RECORD_HEADER_LEN <= records.len() {
            let len = usize::from(u16::from_be_bytes([records[pos + 3], records[pos + 4]]));
            handshake.extend_from_slice(&records[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        let mut out = Vec::new();
        let mut i = 0;
        let mut rest = &handshake[..];
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, 1 << 14).min(rest.len());
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
        }
        out
    }

    /// Feeds `bytes` in the given segment sizes, like a TCP stream would, and returns the result.
    fn feed_in_segments(
        bytes: &[u8],
        segments: &[usize],
    ) -> Result<Option<ClientHelloInfo>, SniffError> {
        let mut asm = HelloAssembler::default();
        let mut end = 0;
        let mut i = 0;
        loop {
            let step = segments[i % segments.len()].max(1);
            end = (end + step).min(bytes.len());
            i += 1;
            let out = asm.advance(&bytes[..end])?;
            if out.is_some() || end == bytes.len() {
                return Ok(out);
            }
        }
    }

    #[test]
    fn rustls_client_hello_gives_sni_and_alpn() {
        let hello = rustls_client_hello("Api.Example.COM", &[b"h2", b"http/1.1"]);
        let info = sniff_client_hello(&hello).unwrap().unwrap();
        assert_eq!(info.sni.as_deref(), Some("api.example.com"));
        assert_eq!(info.alpn, vec!["h2".to_string(), "http/1.1".to_string()]);
        assert_eq!(info.hello_len, hello.len());
        assert!(looks_like_tls(&hello));
    }

    #[test]
    fn every_prefix_of_a_client_hello_needs_more_bytes() {
        let hello = rustls_client_hello("a.example", &[]);
        for end in 0..hello.len() {
            assert!(
                sniff_client_hello(&hello[..end]).unwrap().is_none(),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn client_hello_larger_than_one_record_is_reassembled() {
        let protocols: Vec<Vec<u8>> = (0..1200)
            .map(|i| format!("proto-{i:08}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = protocols.iter().map(Vec::as_slice).collect();
        let hello = rustls_client_hello("big.example", &refs);
        assert!(
            hello.len() > (1 << 14) + 5,
            "hello is {} bytes",
            hello.len()
        );
        let second_record = 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert!(second_record < hello.len(), "rustls wrote several records");
        let info = sniff_client_hello(&hello).unwrap().unwrap();
        assert_eq!(info.sni.as_deref(), Some("big.example"));
        assert_eq!(info.alpn.len(), 1200);
        assert_eq!(info.hello_len, hello.len());
    }

    #[test]
    fn trailing_bytes_after_the_hello_records_are_not_counted() {
        let mut bytes = rustls_client_hello("a.example", &[]);
        let len = bytes.len();
        bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        let info = sniff_client_hello(&bytes).unwrap().unwrap();
        assert_eq!(info.hello_len, len);
    }

    #[test]
    fn client_hello_without_sni_has_none() {
        let hello = rustls_client_hello("a.example", &[]);
        let stripped = without_extension(&hello, EXT_SERVER_NAME);
        let info = sniff_client_hello(&stripped).unwrap().unwrap();
        assert_eq!(info.sni, None);
    }

    #[test]
    fn http_request_is_not_tls() {
        assert!(matches!(
            sniff_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(SniffError::NotTls)
        ));
        assert!(!looks_like_tls(b"GET"));
    }

    #[test]
    fn non_handshake_record_in_the_middle_is_malformed() {
        let hello = rustls_client_hello("a.example", &[]);
        let mut bytes = reframe(&hello, &[10]);
        bytes[15] = 0x17; // second record header: application data
        assert!(matches!(
            sniff_client_hello(&bytes),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn handshake_message_other_than_client_hello_is_malformed() {
        let mut hello = rustls_client_hello("a.example", &[]);
        hello[5] = 0x02; // ServerHello
        assert!(matches!(
            sniff_client_hello(&hello),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn announced_hello_beyond_the_limit_is_too_large() {
        let bytes = [0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00];
        assert!(matches!(
            sniff_client_hello(&bytes),
            Err(SniffError::TooLarge)
        ));
    }

    #[test]
    fn tiny_records_beyond_the_limit_are_too_large() {
        let hello = rustls_client_hello("a.example", &[]);
        // 1-byte records cost 6 bytes each: a hello of over 11 KiB handshake bytes cannot fit.
        let mut handshake = Vec::new();
        handshake.extend_from_slice(&[0x01, 0x00, 0x30, 0x00]);
        handshake.resize(0x3004, 0);
        let mut records = Vec::new();
        for b in handshake {
            records.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x01, b]);
        }
        assert!(matches!(
            sniff_client_hello(&records),
            Err(SniffError::TooLarge)
        ));
        assert!(sniff_client_hello(&hello).unwrap().is_some());
    }

    #[test]
    fn sni_with_a_port_or_bad_characters_is_refused() {
        for bad in ["a.example:443", "a_b..example", "1.2.3.4"] {
            let hello = with_sni(
                &rustls_client_hello("placeholder.example", &[]),
                bad.as_bytes(),
            );
            assert!(
                matches!(sniff_client_hello(&hello), Err(SniffError::BadHost(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sni_trailing_dot_is_normalised() {
        let hello = with_sni(
            &rustls_client_hello("placeholder.example", &[]),
            b"A.Example.",
        );
        let info = sniff_client_hello(&hello).unwrap().unwrap();
        assert_eq!(info.sni.as_deref(), Some("a.example"));
    }

    #[test]
    fn duplicate_server_name_extension_is_malformed() {
        let hello = rustls_client_hello("a.example", &[]);
        let (mut message, sni_ext) = split_off_extension(&hello, EXT_SERVER_NAME);
        append_extension(&mut message, &sni_ext);
        append_extension(&mut message, &sni_ext);
        let bytes = frame(&message);
        assert!(matches!(
            sniff_client_hello(&bytes),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn zero_length_record_is_malformed() {
        assert!(matches!(
            sniff_client_hello(&[0x16, 0x03, 0x01, 0x00, 0x00]),
            Err(SniffError::Malformed(_))
        ));
    }

    // --- helpers that edit a ClientHello's extensions -------------------------------------------

    /// The handshake message bytes of a one-message record stream.
    fn message_of(records: &[u8]) -> Vec<u8> {
        reframe(records, &[usize::MAX])[5..].to_vec()
    }

    /// Offsets in a ClientHello message: (start of the extensions length field).
    fn extensions_offset(message: &[u8]) -> usize {
        let mut p = 4 + 2 + 32;
        p += 1 + usize::from(message[p]);
        p += 2 + usize::from(u16::from_be_bytes([message[p], message[p + 1]]));
        p += 1 + usize::from(message[p]);
        p
    }

    /// Removes extension `kind`, returning the message without it and the removed extension bytes.
    fn split_off_extension(records: &[u8], kind: u16) -> (Vec<u8>, Vec<u8>) {
        let message = message_of(records);
        let off = extensions_offset(&message);
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        let mut p = off + 2;
        while p < message.len() {
            let k = u16::from_be_bytes([message[p], message[p + 1]]);
            let len = usize::from(u16::from_be_bytes([message[p + 2], message[p + 3]]));
            let ext = &message[p..p + 4 + len];
            if k == kind {
                removed.extend_from_slice(ext);
            } else {
                kept.extend_from_slice(ext);
            }
            p += 4 + len;
        }
        let mut out = message[..off].to_vec();
        out.extend_from_slice(&u16::try_from(kept.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&kept);
        fix_lengths(&mut out);
        (out, removed)
    }

    fn append_extension(message: &mut Vec<u8>, ext: &[u8]) {
        let off = extensions_offset(message);
        let len = usize::from(u16::from_be_bytes([message[off], message[off + 1]])) + ext.len();
        message[off..off + 2].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        message.extend_from_slice(ext);
        fix_lengths(message);
    }

    fn fix_lengths(message: &mut [u8]) {
        let body = u32::try_from(message.len() - 4).unwrap().to_be_bytes();
        message[1..4].copy_from_slice(&body[1..]);
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0x16, 0x03, 0x01];
        out.extend_from_slice(&u16::try_from(message.len()).unwrap().to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    fn without_extension(records: &[u8], kind: u16) -> Vec<u8> {
        frame(&split_off_extension(records, kind).0)
    }

    fn with_sni(records: &[u8], name: &[u8]) -> Vec<u8> {
        let (mut message, _) = split_off_extension(records, EXT_SERVER_NAME);
        let n = u16::try_from(name.len()).unwrap();
        let mut ext = Vec::new();
        ext.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
        ext.extend_from_slice(&(n + 5).to_be_bytes());
        ext.extend_from_slice(&(n + 3).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&n.to_be_bytes());
        ext.extend_from_slice(name);
        append_extension(&mut message, &ext);
        frame(&message)
    }

    /// The extensions block and remainder of a ClientHello body as `tls-parser` finds them: the
    /// oracle for [`client_hello_extensions`].
    fn tls_parser_extensions(body: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
        tls_parser::parse_tls_handshake_client_hello(body)
            .ok()
            .map(|(rest, hello)| (hello.ext, rest))
    }

    /// RFC 8446 caps `legacy_session_id` at 32 bytes: 32 pass, 33 are malformed, as for
    /// `tls-parser`.
    #[test]
    fn a_session_id_over_32_bytes_is_malformed() {
        for (len, valid) in [(32u8, true), (33, false)] {
            let mut body = vec![3, 3];
            body.extend_from_slice(&[0; 32]);
            body.push(len);
            body.extend(std::iter::repeat_n(7, usize::from(len)));
            body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
            let ours = client_hello_extensions(&body);
            assert_eq!(ours.is_ok(), valid, "session id of {len} bytes");
            let theirs = tls_parser::parse_tls_handshake_client_hello(&body);
            assert_eq!(
                theirs.is_ok(),
                valid,
                "tls-parser, session id of {len} bytes"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_split_into_records_and_segments_gives_the_same_sni(
            label in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
            alpn_count in 0usize..400,
            record_sizes in proptest::collection::vec(1usize..2000, 1..8),
            segments in proptest::collection::vec(1usize..3000, 1..8),
        ) {
            let sni = format!("{label}.example.com");
            let protocols: Vec<Vec<u8>> =
                (0..alpn_count).map(|i| format!("p{i:06}").into_bytes()).collect();
            let refs: Vec<&[u8]> = protocols.iter().map(Vec::as_slice).collect();
            let hello = rustls_client_hello(&sni, &refs);
            let records = reframe(&hello, &record_sizes);
            let info = feed_in_segments(&records, &segments).unwrap().unwrap();
            prop_assert_eq!(info.sni.as_deref(), Some(sni.as_str()));
            prop_assert_eq!(info.alpn.len(), alpn_count);
            prop_assert_eq!(info.hello_len, records.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = sniff_client_hello(&bytes);
        }

        /// The fixed fields are stepped over exactly as `tls-parser` parses them: the same
        /// extensions block and remainder, or an error from both, for bodies built field by field
        /// with lengths that may lie and a cut anywhere.
        #[test]
        fn extensions_are_found_as_tls_parser_finds_them(
            head in proptest::collection::vec(any::<u8>(), 34),
            session_id in proptest::collection::vec(any::<u8>(), 0..40),
            suites in proptest::collection::vec(any::<u8>(), 0..24),
            methods in proptest::collection::vec(any::<u8>(), 0..4),
            extensions in proptest::collection::vec(any::<u8>(), 0..40),
            trailing in proptest::collection::vec(any::<u8>(), 0..3),
            lies in proptest::collection::vec(-2i32..=2, 4),
            cut in proptest::option::of(0usize..200),
        ) {
            let claimed = |len: usize, lie: i32| len.saturating_add_signed(lie as isize);
            let mut body = head;
            body.push(u8::try_from(claimed(session_id.len(), lies[0]) & 0xff).unwrap());
            body.extend_from_slice(&session_id);
            body.extend_from_slice(&u16::try_from(claimed(suites.len(), lies[1])).unwrap().to_be_bytes());
            body.extend_from_slice(&suites);
            body.push(u8::try_from(claimed(methods.len(), lies[2]) & 0xff).unwrap());
            body.extend_from_slice(&methods);
            if !extensions.is_empty() || lies[3] != 0 {
                body.extend_from_slice(&u16::try_from(claimed(extensions.len(), lies[3])).unwrap().to_be_bytes());
                body.extend_from_slice(&extensions);
            }
            body.extend_from_slice(&trailing);
            if let Some(cut) = cut {
                body.truncate(cut);
            }
            prop_assert_eq!(client_hello_extensions(&body).ok(), tls_parser_extensions(&body));
        }

        #[test]
        fn arbitrary_bodies_are_read_as_tls_parser_reads_them(
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            prop_assert_eq!(client_hello_extensions(&body).ok(), tls_parser_extensions(&body));
        }

        #[test]
        fn arbitrary_bytes_after_a_record_header_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut input = vec![0x16, 0x03, 0x01];
            input.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
            input.extend_from_slice(&bytes);
            let _ = sniff_client_hello(&input);
        }

        #[test]
        fn corrupted_client_hello_never_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut hello = rustls_client_hello("a.example", &[b"h2"]);
            for (i, b) in flips {
                let at = i.index(hello.len());
                hello[at] = b;
            }
            let _ = sniff_client_hello(&hello);
        }
    }
}
