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
//!
//! A server that authenticates clients by certificate (`cert` in `pg_hba.conf`, or
//! `clientcert=verify-full`) gets the one in `sslcert` with its key in `sslkey` (or
//! `PGSSLCERT`, `PGSSLKEY`), both PEM; one without the other is an error naming the missing
//! one. libpq's fallback to `~/.postgresql/postgresql.crt` is not followed: a certificate is
//! sent only where the URL or the environment names it.

use std::path::Path;
use std::sync::Arc;

use postgres::Config;
use postgres::config::SslMode;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The parameters libpq knows and the client does not, read (and taken out of the URL) here.
const SSLMODE: &str = "sslmode";
const SSLROOTCERT: &str = "sslrootcert";
const SSLCERT: &str = "sslcert";
const SSLKEY: &str = "sslkey";

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
    /// The client's certificate named by `sslcert` (or `PGSSLCERT`), or its key named by
    /// `sslkey` (or `PGSSLKEY`).
    #[error("{setting} {path}: {reason}")]
    ClientFile {
        /// `sslcert` or `sslkey`.
        setting: &'static str,
        /// The file, as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("{given} is set but {missing} is not: a client certificate needs both (PEM files)")]
    ClientPair {
        /// The one given.
        given: &'static str,
        /// The one missing.
        missing: &'static str,
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

/// The files libpq's environment names, each standing in for its missing URL parameter.
#[derive(Debug, Default, Clone)]
struct Files {
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Reads `url`, with `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` standing in for a missing
/// `sslrootcert`, `sslcert` and `sslkey` (libpq's rule).
pub fn parse(url: &str) -> Result<Connection, TlsError> {
    let env = Files {
        root: std::env::var("PGSSLROOTCERT").ok(),
        cert: std::env::var("PGSSLCERT").ok(),
        key: std::env::var("PGSSLKEY").ok(),
    };
    parse_with(url, env)
}

fn parse_with(url: &str, env: Files) -> Result<Connection, TlsError> {
    let mut parsed = url::Url::parse(url).map_err(|e| TlsError::Url(e.to_string()))?;
    let mut mode = None;
    let mut files = Files::default();
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            SSLMODE => mode = Some(value.into_owned()),
            SSLROOTCERT => files.root = Some(value.into_owned()),
            SSLCERT => files.cert = Some(value.into_owned()),
            SSLKEY => files.key = Some(value.into_owned()),
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
    let roots = match files.root.or(env.root).as_deref() {
        None | Some("system") => system_roots()?,
        Some(path) => roots_from(Path::new(path))?,
    };
    let identity = match (files.cert.or(env.cert), files.key.or(env.key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            Some((client_identity(Path::new(&cert), Path::new(&key))?, cert))
        }
        (cert, _) => {
            let (given, missing) = match cert {
                Some(_) => (SSLCERT, SSLKEY),
                None => (SSLKEY, SSLCERT),
            };
            return Err(TlsError::ClientPair { given, missing });
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let client = match identity {
        None => builder.with_no_client_auth(),
        // rustls checks the certificate and that the key is its own: what it finds wrong is
        // about the files the user named.
        Some(((chain, key), path)) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::ClientFile {
                    setting: SSLCERT,
                    path,
                    reason: e.to_string(),
                })?
        }
    };
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

/// The client's certificate chain (`cert`) and its private key (`key`), both PEM.
fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let failed = |setting, path: &Path, reason: String| TlsError::ClientFile {
        setting,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| failed(SSLCERT, cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(SSLCERT, cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(failed(SSLCERT, cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".to_owned(),
            e => e.to_string(),
        };
        failed(SSLKEY, key, reason)
    })?;
    Ok((chain, key_der))
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

/// A hint for a failed connection whose cause is a certificate, the server's or the one it
/// wants of the client, or `None`.
pub fn certificate_hint(error: &str) -> Option<&'static str> {
    if error.contains("client certificate") || error.contains("CertificateRequired") {
        return Some(
            "the server wants a client certificate: name it with sslcert=PATH and its key with \
             sslkey=PATH in the URL (or PGSSLCERT, PGSSLKEY)",
        );
    }
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
        let c = parse_with(
            "postgres://u:p@db:5433/q?application_name=x",
            Files::default(),
        )
        .unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(c.config.get_ports(), [5433]);
        for mode in ["disable", "allow", "prefer"] {
            let c =
                parse_with(&format!("postgres://db/q?sslmode={mode}"), Files::default()).unwrap();
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
            let err = parse_with(&url, Files::default()).expect_err("a bad CA file is refused");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("sslrootcert {}: ", ca.display())),
                "{mode}: {text}"
            );
        }
        // PGSSLROOTCERT stands in for a missing sslrootcert.
        let err = parse_with(
            "postgres://db/q?sslmode=require",
            Files {
                root: Some("/nonexistent/ca.pem".into()),
                ..Files::default()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("sslrootcert /nonexistent/ca.pem: "),
            "{err}"
        );
        // The system's roots when none is named.
        let c = parse_with("postgres://db/q?sslmode=verify-full", Files::default()).unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_each_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let base = "postgres://db/q?sslmode=verify-full";
        let err = parse_with(&format!("{base}&sslcert=/c.pem"), Files::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "sslcert is set but sslkey is not: a client certificate needs both (PEM files)"
        );
        // PGSSLKEY alone: the environment counts as the URL does.
        let key_only = Files {
            key: Some("/k.pem".into()),
            ..Files::default()
        };
        let err = parse_with(base, key_only).err().unwrap().to_string();
        assert!(err.starts_with("sslkey is set but sslcert is not"), "{err}");
        let err = parse_with(
            &format!("{base}&sslcert=/nonexistent/c.pem&sslkey=/k.pem"),
            Files::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.starts_with("sslcert /nonexistent/c.pem: "), "{err}");
        let err = parse_with(
            &format!("{base}&sslcert={0}&sslkey={0}", empty.display()),
            Files::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            err,
            format!("sslcert {}: no PEM certificate in it", empty.display())
        );
        // Without an encrypting sslmode they are not read at all, as libpq.
        let c = parse_with("postgres://db/q?sslcert=/c.pem", Files::default()).unwrap();
        assert!(c.tls.is_none());
    }

    #[test]
    fn an_unknown_sslmode_or_a_bad_url_is_named() {
        let err = parse_with("postgres://db/q?sslmode=always", Files::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "sslmode=always: not one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        let err = parse_with("postgres://db/q?frobnicate=1", Files::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("unknown option `frobnicate`"),
            "{err}"
        );
    }
}
