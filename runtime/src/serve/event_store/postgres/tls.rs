//! How the shared queue reaches its PostgreSQL server: libpq's `sslmode` and `sslrootcert`, as
//! users write them in the URL they already have (`postgres://…?sslmode=verify-full&sslrootcert=
//! /etc/ssl/rds-ca.pem`), turned into the client's configuration and a TLS connector
//! (`rustls` on `ring`, through `tokio-postgres-rustls`; the SQS client uses the same stack).
//!
//! lamina never makes an unverified TLS connection. `require`, `verify-ca` and `verify-full`
//! all encrypt and check the server's certificate and name, against the CA in `sslrootcert`
//! (or `PGSSLROOTCERT`, as libpq reads it), else the system's roots (`sslrootcert=system` says
//! so explicitly, as in libpq 16). libpq's `require` would accept any certificate, and
//! `verify-ca` any name: both are stricter here, and the error says how to name the CA.
//! Without `sslmode` (or with `disable`, `allow`, `prefer`) the connection is plain, as it
//! was before TLS was supported: libpq's `prefer` encrypts without checking, which lamina
//! does not do (design note 006).

use std::path::Path;
use std::sync::Arc;

use postgres::Config;
use postgres::config::SslMode;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The parameters libpq knows and the client does not, read (and taken out of the URL) here.
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";

/// Why a URL's TLS settings cannot be used. The message names the setting or the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The URL itself.
    #[error("not a PostgreSQL connection URL: {0}")]
    Url(String),
    /// An `sslmode` libpq does not know either.
    #[error("sslmode={0}: not one of disable, allow, prefer, require, verify-ca, verify-full")]
    Mode(String),
    /// The CA file named by `sslrootcert` (or `PGSSLROOTCERT`).
    #[error("sslrootcert {path}: {reason}")]
    RootCert {
        /// The file, as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's roots could not be read, and no `sslrootcert` was given.
    #[error("no CA to check the server's certificate against: {0}; name one with sslrootcert=PATH")]
    SystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A parsed URL: the client's configuration, and the connector when TLS is asked for.
pub struct Connection {
    /// Everything else in the URL, with `sslmode` as the client knows it.
    pub config: Config,
    /// `None`: a plain connection.
    pub tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration holds the password: only whether TLS is on.
        f.debug_struct("Connection")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads `url`, with `PGSSLROOTCERT` standing in for a missing `sslrootcert` (libpq's rule).
pub fn parse(url: &str) -> Result<Connection, TlsError> {
    parse_with(url, std::env::var("PGSSLROOTCERT").ok())
}

fn parse_with(url: &str, env_root: Option<String>) -> Result<Connection, TlsError> {
    let mut parsed = url::Url::parse(url).map_err(|e| TlsError::Url(e.to_string()))?;
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            SSLMODE => mode = Some(value.into_owned()),
            SSLROOTCERT => root = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(&kept);
    }
    let mut config: Config = parsed
        .as_str()
        .parse()
        // "invalid connection string", and why in its source.
        .map_err(|e: postgres::Error| TlsError::Url(with_sources(&e)))?;
    let verified = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => return Err(TlsError::Mode(other.to_owned())),
    };
    if !verified {
        config.ssl_mode(SslMode::Disable);
        return Ok(Connection { config, tls: None });
    }
    config.ssl_mode(SslMode::Require);
    let roots = match root.or(env_root).as_deref() {
        None | Some("system") => system_roots()?,
        Some(path) => roots_from(Path::new(path))?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connection {
        config,
        tls: Some(MakeRustlsConnect::new(client)),
    })
}

/// The CA certificates in a PEM file.
fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let failed = |reason: String| TlsError::RootCert {
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("no PEM certificate in it".into()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| failed(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The operating system's trusted roots.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map_or_else(
            || "the system has no trusted roots".to_owned(),
            |e| e.to_string(),
        );
        return Err(TlsError::SystemRoots(why));
    }
    Ok(roots)
}

/// An error and every error under it, `: `-separated: the client's own words are often only
/// the outermost ("invalid connection string", "error performing TLS handshake").
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// A hint for a failed connection whose cause is the server's certificate, or `None`.
pub fn certificate_hint(error: &str) -> Option<&'static str> {
    (error.contains("certificate") || error.contains("UnknownIssuer")).then_some(
        "lamina checks the server's certificate at every sslmode that encrypts; name its CA \
         with sslrootcert=PATH in the URL (or PGSSLROOTCERT)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sslmode_the_connection_is_plain_and_the_url_is_the_clients() {
        let c = parse_with("postgres://u:p@db:5433/q?application_name=x", None).unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(c.config.get_ports(), [5433]);
        for mode in ["disable", "allow", "prefer"] {
            let c = parse_with(&format!("postgres://db/q?sslmode={mode}"), None).unwrap();
            assert!(c.tls.is_none(), "{mode}");
        }
    }

    #[test]
    fn every_mode_that_encrypts_verifies_against_the_named_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        // Not a certificate: naming it shows the file is read.
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!(
                "postgres://db/q?sslmode={mode}&sslrootcert={}",
                ca.display()
            );
            let err = parse_with(&url, None).expect_err("a bad CA file is refused");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("sslrootcert {}: ", ca.display())),
                "{mode}: {text}"
            );
        }
        // PGSSLROOTCERT stands in for a missing sslrootcert.
        let err = parse_with(
            "postgres://db/q?sslmode=require",
            Some("/nonexistent/ca.pem".into()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("sslrootcert /nonexistent/ca.pem: "),
            "{err}"
        );
        // The system's roots when none is named.
        let c = parse_with("postgres://db/q?sslmode=verify-full", None).unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn an_unknown_sslmode_or_a_bad_url_is_named() {
        let err = parse_with("postgres://db/q?sslmode=always", None)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "sslmode=always: not one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        let err = parse_with("postgres://db/q?frobnicate=1", None)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown option `frobnicate`"),
            "{err}"
        );
    }
}
