//! Google credentials, for Artifact Registry (and Cloud Run deploys): the
//! chain Google's own tools use. `GOOGLE_APPLICATION_CREDENTIALS`, else the
//! application default credentials gcloud writes, else the metadata server
//! when running on Google Cloud, else `gcloud auth print-access-token`.
//! Tokens are reused until a minute before they expire; none is ever
//! printed.

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Artifact Registry (`*-docker.pkg.dev`) and Container Registry hosts.
pub fn is_google_registry(registry: &str) -> bool {
    let host = registry.split(':').next().unwrap_or(registry);
    host.ends_with(".pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
}

/// Artifact Registry's Python repositories (`REGION-python.pkg.dev`),
/// whose credentials are the same chain's tokens.
pub fn is_python_repository(host: &str) -> bool {
    host.ends_with("-python.pkg.dev")
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialsFile {
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        #[serde(default)]
        token_uri: Option<String>,
    },
    ServiceAccount {
        client_email: String,
        private_key: String,
        #[serde(default)]
        private_key_id: Option<String>,
        #[serde(default)]
        token_uri: Option<String>,
    },
    ExternalAccount {},
    ImpersonatedServiceAccount {},
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Cached {
    token: String,
    source: String,
    until: Instant,
}

static TOKEN: Mutex<Option<Cached>> = Mutex::new(None);

fn adc_file() -> Option<(PathBuf, String)> {
    if let Some(p) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), "GOOGLE_APPLICATION_CREDENTIALS".into()));
    }
    let dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    let p = dir.join("application_default_credentials.json");
    p.is_file()
        .then(|| (p, "application default credentials".to_string()))
}

/// An access token and where it came from, or `None` when this machine has
/// no Google credentials at all.
pub fn access_token_optional() -> Result<Option<(String, String)>> {
    let mut cached = TOKEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = cached.as_ref().filter(|c| c.until > Instant::now()) {
        return Ok(Some((c.token.clone(), c.source.clone())));
    }
    let found = if let Some((path, how)) = adc_file() {
        let (token, ttl) = from_file(&path).with_context(|| {
            format!(
                "Google credentials from {how} ({}) did not give a token",
                path.display()
            )
        })?;
        Some((token, ttl, format!("{how} ({})", path.display())))
    } else if let Some((token, ttl)) = from_metadata_server()? {
        Some((token, ttl, "the metadata server".into()))
    } else {
        from_gcloud()?.map(|token| (token, 300, "gcloud auth print-access-token".to_string()))
    };
    Ok(found.map(|(token, ttl, source)| {
        *cached = Some(Cached {
            token: token.clone(),
            source: source.clone(),
            until: Instant::now() + Duration::from_secs(ttl.saturating_sub(60).max(30)),
        });
        (token, source)
    }))
}

/// [`access_token_optional`], or an error that says how to get credentials.
pub fn access_token() -> Result<(String, String)> {
    access_token_optional()?.ok_or_else(|| {
        anyhow!("no Google credentials: run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file")
    })
}

fn from_file(path: &std::path::Path) -> Result<(String, u64)> {
    let text = std::fs::read_to_string(path)?;
    let file: CredentialsFile = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "not a Google credentials file of a known type (authorized_user, service_account): {e}"
        )
    })?;
    let reply = match file {
        CredentialsFile::AuthorizedUser {
            client_id,
            client_secret,
            refresh_token,
            token_uri,
        } => post_token(
            token_uri.as_deref().unwrap_or(TOKEN_URI),
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client_id),
                ("client_secret", &client_secret),
                ("refresh_token", &refresh_token),
            ],
        )?,
        CredentialsFile::ServiceAccount {
            client_email,
            private_key,
            private_key_id,
            token_uri,
        } => {
            let uri = token_uri.as_deref().unwrap_or(TOKEN_URI);
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let jwt = service_account_jwt(
                &client_email,
                private_key_id.as_deref(),
                &private_key,
                uri,
                now,
            )?;
            post_token(
                uri,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    ("assertion", &jwt),
                ],
            )?
        }
        CredentialsFile::ExternalAccount {} | CredentialsFile::ImpersonatedServiceAccount {} => {
            bail!("external_account and impersonated credentials are not supported yet; use `gcloud auth print-access-token` (remove GOOGLE_APPLICATION_CREDENTIALS) or a service account key")
        }
    };
    Ok((reply.access_token, reply.expires_in.unwrap_or(3600)))
}

fn post_token(uri: &str, form: &[(&str, &str)]) -> Result<TokenReply> {
    let resp = crate::core::http::agent_for(uri)
        .post(uri)
        .send_form(form.iter().copied())
        .map_err(|e| anyhow!("POST {uri}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().read_to_string().unwrap_or_default();
    if status != 200 {
        // Google's error body names the problem (invalid_grant, ...) and
        // holds no secret.
        let why: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        bail!(
            "POST {uri}: HTTP {status}: {} {}",
            why["error"].as_str().unwrap_or(""),
            why["error_description"].as_str().unwrap_or("")
        );
    }
    serde_json::from_str(&body).map_err(|_| anyhow!("POST {uri}: the reply holds no access_token"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed JWT a service account trades for an access token (RS256).
fn service_account_jwt(
    email: &str,
    key_id: Option<&str>,
    pem: &str,
    aud: &str,
    now: u64,
) -> Result<String> {
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(k) = key_id {
        header["kid"] = k.into();
    }
    let claims = serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header)?),
        b64url(&serde_json::to_vec(&claims)?)
    );
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| anyhow!("private_key is not a PEM block"))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow!("private_key is not a PKCS#8 RSA key: {e}"))?;
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| anyhow!("signing the service account assertion failed"))?;
    Ok(format!("{signing_input}.{}", b64url(&sig)))
}

/// On Google Cloud the metadata server hands out the attached service
/// account's token. Off it, the name does not resolve and this costs a
/// failed DNS lookup.
fn from_metadata_server() -> Result<Option<(String, u64)>> {
    use std::net::ToSocketAddrs;
    let host =
        std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| "metadata.google.internal".into());
    if (host.as_str(), 80).to_socket_addrs().is_err() {
        return Ok(None);
    }
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
    let resp = match crate::core::http::agent_for(&url)
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .call()
    {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    if resp.status().as_u16() != 200 {
        return Ok(None);
    }
    let reply: TokenReply = serde_json::from_str(&resp.into_body().read_to_string()?)
        .map_err(|_| anyhow!("{url}: the reply holds no access_token"))?;
    Ok(Some((reply.access_token, reply.expires_in.unwrap_or(300))))
}

fn from_gcloud() -> Result<Option<String>> {
    if crate::core::which("gcloud").is_none() {
        return Ok(None);
    }
    let out = std::process::Command::new("gcloud")
        .args(["auth", "print-access-token"])
        .stderr(std::process::Stdio::piped())
        .output()?;
    if !out.status.success() {
        bail!(
            "gcloud auth print-access-token failed: {} (run `gcloud auth login`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((!token.is_empty()).then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_registries() {
        assert!(is_google_registry("us-central1-docker.pkg.dev"));
        assert!(is_google_registry("gcr.io"));
        assert!(is_google_registry("eu.gcr.io"));
        assert!(!is_google_registry("127.0.0.1:5000"));
        assert!(!is_google_registry("notgcr.io"));
    }

    #[test]
    fn service_account_assertion_is_a_verifiable_rs256_jwt() {
        // A throwaway 2048-bit key made for this test with
        // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
        let pem = include_str!("../../tests/fixtures/test-rsa-key.pem");
        let jwt = service_account_jwt(
            "sa@p.iam.gserviceaccount.com",
            Some("kid1"),
            pem,
            TOKEN_URI,
            1_700_000_000,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], TOKEN_URI);
        assert_eq!(claims["exp"], 1_700_003_600u64);
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        use ring::signature::KeyPair;
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key().as_ref(),
        );
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies with the key's public half");
        assert!(service_account_jwt("a", None, "-----BEGIN-----\n!!\n", TOKEN_URI, 0).is_err());
    }

    /// A one-shot OAuth token endpoint on loopback: returns the form it got.
    fn token_endpoint(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = c.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        let status = if reply.contains("error") {
                            "400 Bad Request"
                        } else {
                            "200 OK"
                        };
                        write!(c, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).unwrap();
                        return body.to_string();
                    }
                }
            }
        });
        (url, h)
    }

    #[test]
    fn authorized_user_and_service_account_files_give_tokens() {
        let d = tempfile::tempdir().unwrap();
        let (url, h) = token_endpoint(r#"{"access_token":"ya29.user","expires_in":1200}"#);
        let f = d.path().join("adc.json");
        std::fs::write(
            &f,
            serde_json::json!({"type": "authorized_user", "client_id": "cid", "client_secret": "cs",
                "refresh_token": "rt", "token_uri": url})
            .to_string(),
        )
        .unwrap();
        assert_eq!(from_file(&f).unwrap(), ("ya29.user".to_string(), 1200));
        let form = h.join().unwrap();
        assert!(
            form.contains("grant_type=refresh_token") && form.contains("refresh_token=rt"),
            "{form}"
        );

        let (url, h) = token_endpoint(r#"{"access_token":"ya29.sa"}"#);
        std::fs::write(
            &f,
            serde_json::json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
                "private_key": include_str!("../../tests/fixtures/test-rsa-key.pem"),
                "private_key_id": "k1", "token_uri": url})
            .to_string(),
        )
        .unwrap();
        assert_eq!(from_file(&f).unwrap(), ("ya29.sa".to_string(), 3600));
        let form = h.join().unwrap();
        assert!(
            form.contains("jwt-bearer") && form.contains("assertion="),
            "{form}"
        );

        let (url, h) = token_endpoint(
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        );
        std::fs::write(
            &f,
            serde_json::json!({"type": "authorized_user", "client_id": "cid", "client_secret": "cs-secret-9",
                "refresh_token": "rt-secret-9", "token_uri": url})
            .to_string(),
        )
        .unwrap();
        let e = format!("{:#}", from_file(&f).unwrap_err());
        h.join().unwrap();
        assert!(e.contains("invalid_grant") && e.contains("revoked"), "{e}");
        assert!(!e.contains("secret-9"), "{e}");

        std::fs::write(&f, r#"{"type": "external_account"}"#).unwrap();
        let e = format!("{:#}", from_file(&f).unwrap_err());
        assert!(e.contains("not supported"), "{e}");
    }
}
