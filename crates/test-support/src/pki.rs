//! The test PKI: the demo CA of `src/pki.rs`, the one copy (`bulkhead quickstart` uses it at run
//! time, so it stays in the binary; it is included here with `#[path]` because a shipped binary
//! must not depend on this crate), plus what tests need on top of it: the DER forms a TLS peer
//! presents, to compare with.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[path = "../../../src/pki.rs"]
mod demo;

pub use demo::{tls_secret_yaml, DemoCa, LeafCert};

/// The first certificate of a PEM chain.
fn first_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate PEM")
}

impl DemoCa {
    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        first_der(self.cert_pem())
    }
}

impl LeafCert {
    /// The leaf certificate, DER: what a TLS server presenting it sends.
    pub fn der(&self) -> CertificateDer<'static> {
        first_der(&self.cert_pem)
    }
}
