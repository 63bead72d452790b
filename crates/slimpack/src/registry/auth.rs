//! Registry credentials, found where users already keep them: Docker's
//! `config.json` (`credHelpers`, `auths`, `credsStore`), the containers
//! `auth.json` of podman/skopeo, and for Google's registries the Google
//! credential chain. A secret is never part of a `Debug` or error string.

use crate::registry::google;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Sent as Basic auth, and to a token service when the registry asks.
    Password { username: String, password: String },
    /// An OAuth2 refresh token ("identity token") for the token service.
    IdentityToken(String),
}

/// Credentials for one registry and where they came from (for messages).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub secret: Option<Secret>,
    pub source: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password { username, .. } => write!(f, "user {username:?}, password ***"),
            Secret::IdentityToken(_) => write!(f, "identity token ***"),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.secret {
            None => "anonymous".to_string(),
            Some(s) => format!("{s:?}"),
        };
        write!(f, "Credential({kind} from {})", self.source)
    }
}

impl Credential {
    pub fn anonymous() -> Credential {
        Credential {
            secret: None,
            source: "no credentials".into(),
        }
    }

    /// `Authorization: Basic ...` for this credential, if it has a password.
    pub fn basic_header(&self) -> Option<String> {
        match &self.secret {
            Some(Secret::Password { username, password }) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The files consulted, in order: Docker's, then the containers one.
pub fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(d).join("config.json"));
    } else if let Some(h) = std::env::var_os("HOME") {
        files.push(PathBuf::from(h).join(".docker/config.json"));
    }
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    files
}

/// The keys a registry may be filed under in `auths`.
fn key_matches(key: &str, registry: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    if registry == super::reference::DOCKER_HUB {
        matches!(k, "docker.io" | "index.docker.io" | "registry-1.docker.io")
    } else {
        k == registry
    }
}

/// The server URL a credential helper is asked about.
fn helper_server(registry: &str) -> String {
    if registry == super::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_string()
    }
}

/// Credentials for `registry` (as written in the reference).
pub fn lookup(registry: &str) -> Result<Credential> {
    for file in config_files() {
        if let Some(c) = from_config_file(&file, registry)? {
            return Ok(c);
        }
    }
    if google::is_google_registry(registry) {
        if let Some((token, source)) = google::access_token_optional()? {
            return Ok(Credential {
                secret: Some(Secret::Password {
                    username: "oauth2accesstoken".into(),
                    password: token,
                }),
                source,
            });
        }
    }
    Ok(Credential::anonymous())
}

fn from_config_file(file: &Path, registry: &str) -> Result<Option<Credential>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let cfg: ConfigFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid Docker config file", file.display()))?;
    let shown = file.display();
    if let Some((_, helper)) = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| key_matches(k, registry))
    {
        return helper_get(helper, registry).map(|c| {
            Some(c.unwrap_or_else(|| Credential {
                secret: None,
                source: format!("docker-credential-{helper} (credHelpers in {shown}) had none"),
            }))
        });
    }
    if let Some((key, entry)) = cfg.auths.iter().find(|(k, _)| key_matches(k, registry)) {
        let source = format!("auths[{key:?}] in {shown}");
        if let Some(tok) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential {
                secret: Some(Secret::IdentityToken(tok.clone())),
                source,
            }));
        }
        if let Some(a) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| anyhow!("{source}: `auth` is not base64 of user:password"))?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| anyhow!("{source}: `auth` is not base64 of user:password"))?;
            return Ok(Some(Credential {
                secret: Some(Secret::Password {
                    username: u.into(),
                    password: p.into(),
                }),
                source,
            }));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential {
                secret: Some(Secret::Password {
                    username: u.clone(),
                    password: p.clone(),
                }),
                source,
            }));
        }
    }
    if let Some(store) = cfg.creds_store.as_ref().filter(|s| !s.is_empty()) {
        if let Some(c) = helper_get(store, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `docker-credential-NAME get` (the credential helper protocol):
/// server URL on stdin, `{"Username", "Secret"}` on stdout. `None` when the
/// helper has nothing for this registry.
pub fn helper_get(name: &str, registry: &str) -> Result<Option<Credential>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow!("cannot run the credential helper {program} named in the Docker config ({e}); install it or remove it from credHelpers/credsStore")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_lowercase().contains("not found") {
            return Ok(None);
        }
        // Helpers print their own message, never the secret.
        bail!(
            "credential helper {program} failed for {registry}: {}",
            msg.trim()
        );
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|_| {
        anyhow!("credential helper {program} printed something that is not its JSON reply")
    })?;
    let source = format!("credential helper {program}");
    if reply.secret.is_empty() {
        return Ok(None);
    }
    let secret = if reply.username == "<token>" {
        Secret::IdentityToken(reply.secret)
    } else {
        Secret::Password {
            username: reply.username,
            password: reply.secret,
        }
    };
    Ok(Some(Credential {
        secret: Some(secret),
        source,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn auths_entries_decode_and_match_docker_hub_aliases() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "config.json",
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                "127.0.0.1:5000": {"username": "u2", "password": "p2"},
                "ghcr.io": {"identitytoken": "refresh"}
            }}"#,
        );
        let c = from_config_file(&f, "docker.io").unwrap().unwrap();
        assert_eq!(
            c.secret,
            Some(Secret::Password {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        let c = from_config_file(&f, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(c.basic_header().unwrap(), "Basic dTI6cDI=");
        let c = from_config_file(&f, "ghcr.io").unwrap().unwrap();
        assert_eq!(c.secret, Some(Secret::IdentityToken("refresh".into())));
        assert!(from_config_file(&f, "quay.io").unwrap().is_none());
        assert!(from_config_file(&d.path().join("none.json"), "quay.io")
            .unwrap()
            .is_none());
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let c = Credential {
            secret: Some(Secret::Password {
                username: "me".into(),
                password: "hunter2".into(),
            }),
            source: "test".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let c = Credential {
            secret: Some(Secret::IdentityToken("tok-123".into())),
            source: "test".into(),
        };
        assert!(!format!("{c:?}").contains("tok-123"));
    }

    #[test]
    fn broken_config_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "config.json", "{not json");
        let e = format!("{:#}", from_config_file(&f, "x.io").unwrap_err());
        assert!(e.contains("config.json"), "{e}");
        let f = write(
            d.path(),
            "c2.json",
            r#"{"auths": {"x.io": {"auth": "!!"}}}"#,
        );
        let e = format!("{:#}", from_config_file(&f, "x.io").unwrap_err());
        assert!(e.contains("x.io") && e.contains("base64"), "{e}");
    }
}
