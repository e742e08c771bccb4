//! Connections to PostgreSQL, from a URL as libpq reads it, TLS included.
//!
//! tokio-postgres knows `sslmode` disable, prefer and require only, and does
//! no TLS itself. Here the TLS parameters are taken out of the URL (either
//! form, `postgres://…?sslmode=verify-full` or `host=… sslmode=…`) and
//! carried out with OpenSSL, with libpq's meanings:
//!
//! | `sslmode` | TLS | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | no (chain, with `sslrootcert`) |
//! | `require` | always | no (chain, with `sslrootcert`) |
//! | `verify-ca` | always | chain up to `sslrootcert` (else the system's CAs) |
//! | `verify-full` | always | chain, and the host name in the certificate |
//!
//! `sslcert` and `sslkey` give a client certificate.

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// The TLS parameters taken out of the URL.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// A database URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not a PostgreSQL connection string (postgres://user@host:port/db): {0}")]
    Syntax(String),
    #[error("sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("{key}={path}: {problem}")]
    Tls {
        key: &'static str,
        path: String,
        problem: String,
    },
}

/// How TLS is negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed database URL, ready to connect.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    mode: TlsMode,
    /// None when `sslmode=disable`.
    tls: Option<MakeTlsConnector>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Database")
            .field("target", &self.target())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Database {
    pub fn from_url(url: &str) -> Result<Database, UrlError> {
        let (rest, tls) = split_tls_parameters(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| UrlError::Syntax(e.to_string()))?;
        let get = |key: &str| {
            tls.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let mode = match get("sslmode").as_deref() {
            None | Some("prefer") => TlsMode::Prefer,
            Some("disable") => TlsMode::Disable,
            Some("require") => TlsMode::Require,
            Some("verify-ca") => TlsMode::VerifyCa,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => return Err(UrlError::SslMode(other.to_owned())),
        };
        let root = get("sslrootcert").map(PathBuf::from);
        let tls = if mode == TlsMode::Disable {
            config.ssl_mode(SslMode::Disable);
            None
        } else {
            config.ssl_mode(match mode {
                TlsMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            });
            Some(connector(
                mode,
                root.as_deref(),
                get("sslcert").as_deref(),
                get("sslkey").as_deref(),
            )?)
        };
        Ok(Database { config, mode, tls })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// `user@host:port/db`: where it connects, without the password.
    pub fn target(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.config.get_user().unwrap_or("?"),
            self.config.get_dbname().unwrap_or("?")
        )
    }

    /// Connects; the connection runs on a task of its own until the client
    /// is dropped or the server goes away.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                drive(connection);
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                drive(connection);
                Ok(client)
            }
        }
    }
}

/// Runs a connection until it closes, passing on what the server says
/// besides answers: a warning is logged once per connection and text (a
/// feature TimescaleDB turns off says so only this way), the rest at
/// debug level.
fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures::StreamExt;
    tokio::spawn(async move {
        let mut warned = std::collections::HashSet::new();
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    // 25P01: a ROLLBACK after the server ended the
                    // transaction itself, which the writer's paths expect.
                    let warning = notice.severity() == "WARNING"
                        && notice.code()
                            != &tokio_postgres::error::SqlState::NO_ACTIVE_SQL_TRANSACTION;
                    if warning && warned.insert(notice.message().to_owned()) {
                        tracing::warn!(
                            sqlstate = notice.code().code(),
                            message = notice.message(),
                            hint = notice.hint().unwrap_or(""),
                            "PostgreSQL warns"
                        );
                    } else {
                        tracing::debug!(
                            severity = notice.severity(),
                            message = notice.message(),
                            "PostgreSQL notice"
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "database connection closed");
                    return;
                }
            }
        }
    });
}

fn connector(
    mode: TlsMode,
    root: Option<&std::path::Path>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<MakeTlsConnector, UrlError> {
    let tls_error = |key: &'static str, path: &str, e: openssl::error::ErrorStack| UrlError::Tls {
        key,
        path: path.to_owned(),
        problem: e.to_string(),
    };
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(|e| UrlError::Tls {
        key: "sslmode",
        path: String::new(),
        problem: e.to_string(),
    })?;
    if let Some(root) = root {
        let path = root.display().to_string();
        if !root.exists() {
            return Err(UrlError::Tls {
                key: "sslrootcert",
                path,
                problem: "no such file".into(),
            });
        }
        builder
            .set_ca_file(root)
            .map_err(|e| tls_error("sslrootcert", &path, e))?;
    }
    if let Some(cert) = cert {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| tls_error("sslcert", cert, e))?;
    }
    if let Some(key) = key {
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| tls_error("sslkey", key, e))?;
    }
    // libpq: prefer and require check nothing, unless a root certificate is
    // given (then they check the chain, as verify-ca).
    let check_chain = matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) || root.is_some();
    if !check_chain {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if mode != TlsMode::VerifyFull {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(connector)
}

/// Splits a connection string into the part tokio-postgres parses and the
/// TLS parameters (decoded), in order.
fn split_tls_parameters(url: &str) -> Result<(String, Vec<(String, String)>), UrlError> {
    let mut tls = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((head, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), tls));
        };
        let mut kept = Vec::new();
        for part in query.split('&') {
            let (key, value) = url::form_urlencoded::parse(part.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            if TLS_KEYS.contains(&key.as_str()) {
                tls.push((key, value));
            } else if !part.is_empty() {
                kept.push(part);
            }
        }
        let rest = if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    // key=value form: values may be single-quoted, with \ escaping.
    let mut rest = String::new();
    let mut chars = url.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(UrlError::Syntax(format!("`{key}` has no `=value`")));
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        let quoted = chars.peek().is_some_and(|&(_, c)| c == '\'');
        if quoted {
            chars.next();
        }
        let mut end = url.len();
        let mut closed = !quoted;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '\'' if quoted => {
                    end = i + 1;
                    closed = true;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(UrlError::Syntax(format!(
                "the value of `{key}` has no closing quote"
            )));
        }
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&url[start..end]);
        }
    }
    Ok((rest, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_in_either_form() {
        let (rest, tls) = split_tls_parameters(
            "postgres://u:p%40w@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.crt",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%40w@h:5/db?application_name=x");
        assert_eq!(
            tls,
            vec![
                ("sslmode".to_owned(), "verify-full".to_owned()),
                ("sslrootcert".to_owned(), "/tmp/ca.crt".to_owned())
            ]
        );
        let (rest, tls) =
            split_tls_parameters("host=h  sslmode = 'verify-ca' password='a b\\'c' dbname=d")
                .unwrap();
        assert_eq!(rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!(tls, vec![("sslmode".to_owned(), "verify-ca".to_owned())]);
        assert!(split_tls_parameters("host=h password='open").is_err());
    }

    #[test]
    fn modes_follow_libpq() {
        let mode = |url: &str| Database::from_url(url).map(|d| d.mode());
        assert_eq!(mode("postgres://u@h/d"), Ok(TlsMode::Prefer));
        assert_eq!(
            mode("postgres://u@h/d?sslmode=disable"),
            Ok(TlsMode::Disable)
        );
        assert_eq!(mode("host=h sslmode=verify-full"), Ok(TlsMode::VerifyFull));
        assert_eq!(
            mode("postgres://u@h/d?sslmode=allow").unwrap_err(),
            UrlError::SslMode("allow".into())
        );
        let err =
            mode("postgres://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent.crt").unwrap_err();
        assert!(
            err.to_string()
                .contains("sslrootcert=/nonexistent.crt: no such file"),
            "{err}"
        );
    }

    #[test]
    fn debug_and_target_never_show_the_password() {
        let db = Database::from_url("postgres://sink:s3cret@db.example:6432/market").unwrap();
        assert_eq!(db.target(), "sink@db.example:6432/market");
        assert!(!format!("{db:?}").contains("s3cret"));
    }
}
