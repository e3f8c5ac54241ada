//! A throwaway certificate authority for demos and tests: a CA and leaf certificates signed by it,
//! rendered as PEM and as `kubernetes.io/tls` Secret manifests. Never for production keys.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority held in memory.
pub struct DemoCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct LeafCert {
    /// Certificate chain (leaf only), PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl DemoCa {
    /// A new CA with a fresh P-256 key.
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM (what a client trusts).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a leaf certificate for the given DNS names (wildcards allowed).
    pub fn issue(&self, names: &[&str]) -> Result<LeafCert, rcgen::Error> {
        let sans: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(LeafCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A `kubernetes.io/tls` Secret manifest (with `stringData`) holding a leaf certificate.
pub fn tls_secret_yaml(namespace: &str, name: &str, leaf: &LeafCert) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  namespace: {namespace}\n  name: {name}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&leaf.cert_pem),
        indent(&leaf.key_pem)
    )
}
