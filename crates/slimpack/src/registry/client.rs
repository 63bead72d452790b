//! A client of one repository of a registry, as the OCI distribution spec
//! describes it: blobs (HEAD, GET, mount, monolithic and chunked upload) and
//! manifests. Auth follows the registry's `WWW-Authenticate` challenge
//! (Bearer token service or Basic); transient failures are retried with
//! backoff, a bounded number of times.

use super::auth::{Credential, Secret};
use super::reference::Reference;
use crate::core::http::{backoff, retriable};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http;
use ureq::SendBody;

/// Attempts per request before giving up on 429/5xx/connection errors.
const ATTEMPTS: u32 = 6;

/// Chunk size after a 413: under the 4 MiB some registries cap a request at.
const DEFAULT_CHUNK: u64 = 4 << 20;

/// `SLIMPACK_CHUNK_SIZE`: upload in chunks of this many bytes (ECR wants at
/// least 5 MiB per chunk, some registries at most 4 MiB per request).
fn chunk_size() -> Result<Option<u64>> {
    match std::env::var("SLIMPACK_CHUNK_SIZE") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 64 * 1024)
            .map(Some)
            .ok_or_else(|| {
                anyhow!("SLIMPACK_CHUNK_SIZE={v:?}: expected a number of bytes, at least 65536")
            }),
        _ => Ok(None),
    }
}

/// Manifest media types we read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// What a request carries.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`, with progress.
    File {
        path: &'a Path,
        offset: u64,
        len: u64,
        progress: Option<&'a ProgressBar>,
    },
}

struct Token {
    header: String,
    until: Option<Instant>,
}

pub struct Client {
    pub reference: Reference,
    base: String,
    agent: &'static ureq::Agent,
    cred: Credential,
    scopes: Vec<String>,
    auth: Mutex<Option<Token>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The registry's own words: `{"errors": [{"code", "message"}]}`.
    pub fn error_text(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let errs: Vec<String> = v["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["code"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if errs.is_empty() {
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
                .trim()
                .to_string()
        } else {
            errs.join("; ")
        }
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs; values may hold commas (scope lists).
    let mut params = std::collections::BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// An upload URL with the `digest` query parameter that closes it.
/// The most of a reply held in memory (manifests, configs, token
/// answers): the OCI spec's manifests are kept well under 4 MiB.
const REPLY_LIMIT: u64 = 64 << 20;

/// A registry's reply larger than slimpack reads into memory: an error of
/// its own, never retried.
#[derive(Debug, thiserror::Error)]
#[error("{what}: the reply is larger than {} MiB, more than any manifest, config or token answer holds; the registry or the reference is wrong", limit >> 20)]
pub struct ReplyTooLarge {
    pub what: String,
    pub limit: u64,
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Where a streamed reply body goes.
type Sink<'a> = dyn FnMut(&mut dyn Read) -> std::io::Result<()> + 'a;

/// A reader that moves a progress bar.
struct Counted<'a, R> {
    inner: R,
    progress: Option<&'a ProgressBar>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

impl Client {
    /// Opens `reference`'s repository for `actions` (`pull` or `pull,push`),
    /// also asking pull access to `mount_from` repositories of the same
    /// registry (cross-repository mounts need it).
    pub fn connect(
        reference: &Reference,
        actions: &str,
        mount_from: &[String],
        insecure: bool,
    ) -> Result<Client> {
        let scheme = if reference.is_loopback() || insecure {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{}", reference.api_host());
        let cred = super::auth::lookup(&reference.registry)?;
        let mut scopes = vec![format!("repository:{}:{actions}", reference.repository)];
        scopes.extend(
            mount_from
                .iter()
                .filter(|r| **r != reference.repository)
                .map(|r| format!("repository:{r}:pull")),
        );
        let client = Client {
            reference: reference.clone(),
            agent: crate::core::http::agent_for(&base),
            base,
            cred,
            scopes,
            auth: Mutex::new(None),
        };
        // Ask /v2/ first: a body is never streamed only to learn that the
        // registry wants a token.
        let r = client.request("GET", &format!("{}/v2/", client.base), &[], Body::Empty)?;
        if r.status != 200 && r.status != 401 {
            bail!(
                "{} does not answer as an OCI registry (GET /v2/: HTTP {}): {}",
                client.base,
                r.status,
                r.error_text()
            );
        }
        Ok(client)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.reference.repository)
    }

    /// Resolves a `Location` header against the registry.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    fn auth_header(&self) -> Option<String> {
        let t = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        t.as_ref()
            .filter(|t| t.until.is_none_or(|u| u > Instant::now()))
            .map(|t| t.header.clone())
    }

    fn denied(&self, what: &str) -> anyhow::Error {
        let how = match &self.cred.secret {
            None if crate::registry::google::is_google_registry(&self.reference.registry) => format!(
                "no credentials were found for {0}; run `gcloud auth configure-docker {0}` or `gcloud auth application-default login`",
                self.reference.registry
            ),
            None => format!(
                "no credentials were found for {0}; run `docker login {0}` or add it to ~/.docker/config.json (auths or credHelpers)",
                self.reference.registry
            ),
            Some(_) => format!(
                "the credentials from {} were refused; check them with `docker login {}`",
                self.cred.source, self.reference.registry
            ),
        };
        anyhow!("{what}: {how}")
    }

    /// Answers a challenge: a token from the token service, or Basic auth.
    fn authenticate(&self, challenge: &str) -> Result<()> {
        let header = match parse_challenge(challenge) {
            Some(Challenge::Basic) => self.cred.basic_header().ok_or_else(|| {
                self.denied(&format!("{} asks for a password", self.reference.registry))
            })?,
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = self.scopes.clone();
                if let Some(s) = scope {
                    for one in s.split(' ') {
                        if !scopes.iter().any(|x| x == one) {
                            scopes.push(one.to_string());
                        }
                    }
                }
                let (token, ttl) = self.fetch_token(&realm, service.as_deref(), &scopes)?;
                *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(Token {
                    header: format!("Bearer {token}"),
                    until: Some(
                        Instant::now() + Duration::from_secs(ttl.saturating_sub(10).max(5)),
                    ),
                });
                return Ok(());
            }
            None => bail!(
                "{} asks for an authentication scheme slimpack does not speak: {challenge}",
                self.reference.registry
            ),
        };
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(Token {
            header,
            until: None,
        });
        Ok(())
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, u64)> {
        let agent = crate::core::http::agent_for(realm);
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt, None));
            }
            let result = match &self.cred.secret {
                Some(Secret::IdentityToken(refresh)) => {
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh),
                        ("client_id", "slimpack"),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    let joined = scopes.join(" ");
                    form.push(("scope", &joined));
                    agent.post(realm).send_form(form)
                }
                _ => {
                    let mut req = agent.get(realm);
                    if let Some(s) = service {
                        req = req.query("service", s);
                    }
                    for s in scopes {
                        req = req.query("scope", s);
                    }
                    if let Some(b) = self.cred.basic_header() {
                        req = req.header("Authorization", b);
                    }
                    req.call()
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    last = Some(anyhow!("token service {realm}: {e}"));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let body = resp.into_body().read_to_vec().unwrap_or_default();
            if retriable(status) {
                last = Some(anyhow!("token service {realm}: HTTP {status}"));
                continue;
            }
            if status == 401 || status == 403 {
                return Err(self.denied(&format!("token service {realm} (HTTP {status})")));
            }
            if status != 200 {
                bail!("token service {realm}: HTTP {status}");
            }
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|_| anyhow!("token service {realm}: reply is not JSON"))?;
            let token = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| anyhow!("token service {realm}: reply holds no token"))?;
            return Ok((token.to_string(), v["expires_in"].as_u64().unwrap_or(60)));
        }
        Err(last.unwrap_or_else(|| anyhow!("token service {realm} failed")))
    }

    /// One request, authenticated, retried on 429/5xx and connection
    /// errors. Other statuses are the caller's to judge.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Reply> {
        self.request_into(method, url, headers, body, None)
    }

    /// [`Client::request`], with a 200 reply's body streamed into `sink`
    /// instead of memory. A sink's I/O error counts as a failed attempt.
    fn request_into(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
        mut sink: Option<&mut Sink>,
    ) -> Result<Reply> {
        let mut last = None;
        let mut reauthed = false;
        let mut attempt = 0;
        while attempt < ATTEMPTS {
            if attempt > 0 {
                if let Body::File {
                    progress: Some(p), ..
                } = &body
                {
                    p.set_position(0);
                }
            }
            let reply = match self.send_once(method, url, headers, &body, sink.as_deref_mut()) {
                Ok(r) => r,
                // A reply too large is no network fault: asking again gets
                // the same, and downloads it again.
                Err(e) if e.downcast_ref::<ReplyTooLarge>().is_some() => return Err(e),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(backoff(attempt, None));
                    attempt += 1;
                    continue;
                }
            };
            let status = reply.status;
            if status == 401 && !reauthed {
                if let Some(ch) = reply.header("WWW-Authenticate") {
                    self.authenticate(ch)?;
                    reauthed = true;
                    continue;
                }
            }
            if retriable(status) {
                let wait = backoff(attempt, reply.header("Retry-After"));
                last = Some(anyhow!(
                    "{method} {url}: HTTP {status} {}",
                    reply.error_text()
                ));
                std::thread::sleep(wait);
                attempt += 1;
                continue;
            }
            if status == 401 || (status == 403 && url.ends_with("/v2/")) {
                return Err(self.denied(&format!("{method} {url}: HTTP {status}")));
            }
            return Ok(reply);
        }
        Err(last.unwrap_or_else(|| anyhow!("{method} {url} failed"))).with_context(|| {
            format!(
                "{} kept failing after {ATTEMPTS} attempts (the last error follows): check that the registry is up, the host and port of the reference, and the proxy variables",
                self.base
            )
        })
    }

    /// One attempt: the request sent and the whole reply read.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
        sink: Option<&mut Sink>,
    ) -> Result<Reply> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = self.auth_header() {
            req = req.header("Authorization", a);
        }
        let sent = match body {
            Body::Empty => {
                let r = if matches!(method, "PUT" | "POST" | "PATCH") {
                    req.header("Content-Length", "0")
                } else {
                    req
                };
                self.agent.run(r.body(SendBody::none())?)
            }
            Body::Bytes(b) => self
                .agent
                .run(req.header("Content-Length", b.len().to_string()).body(*b)?),
            Body::File {
                path,
                offset,
                len,
                progress,
            } => {
                use std::io::Seek;
                let mut f =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                f.seek(std::io::SeekFrom::Start(*offset))?;
                let mut reader = Counted {
                    inner: f.take(*len),
                    progress: *progress,
                };
                self.agent.run(
                    req.header("Content-Length", len.to_string())
                        .body(SendBody::from_reader(&mut reader))?,
                )
            }
        };
        let resp = sent.map_err(|e| anyhow!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let (parts, body_in) = resp.into_parts();
        let body = if method == "HEAD" {
            Vec::new()
        } else if let (200, Some(sink)) = (status, sink) {
            sink(&mut body_in.into_reader())
                .map_err(|e| anyhow!("{method} {url}: reading the reply: {e}"))?;
            Vec::new()
        } else {
            let too_large = || ReplyTooLarge {
                what: format!("{method} {url}"),
                limit: REPLY_LIMIT,
            };
            let declared = parts
                .headers
                .get("Content-Length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > REPLY_LIMIT) {
                return Err(too_large().into());
            }
            body_in
                .into_with_config()
                .limit(REPLY_LIMIT)
                .read_to_vec()
                .map_err(|e| match e {
                    ureq::Error::BodyExceedsLimit(_) => too_large().into(),
                    e => anyhow!("{method} {url}: reading the reply: {e}"),
                })?
        };
        Ok(Reply {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// Whether the repository holds the blob.
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        let r = self.request(
            "HEAD",
            &self.url(&format!("blobs/{digest}")),
            &[],
            Body::Empty,
        )?;
        match r.status {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!(
                "HEAD blob {digest} in {}: HTTP {s}",
                self.reference.repo_key()
            ),
        }
    }

    /// The error for a reply that did not do `what`.
    fn failure(&self, r: &Reply, what: &str) -> anyhow::Error {
        if r.status == 403 {
            return self.denied(&format!("{what}: HTTP 403 {}", r.error_text()));
        }
        anyhow!("{what}: HTTP {} {}", r.status, r.error_text())
    }

    /// Asks the registry to mount `digest` from `from` (another repository
    /// here). `Ok(None)` when mounted; else the upload URL it opened instead.
    pub fn mount(&self, digest: &str, from: &str) -> Result<Option<String>> {
        let url = format!("{}?mount={digest}&from={from}", self.url("blobs/uploads/"));
        let r = self.request("POST", &url, &[], Body::Empty)?;
        match r.status {
            201 => Ok(None),
            202 => {
                Ok(Some(self.absolute(r.header("Location").ok_or_else(
                    || anyhow!("POST {url}: 202 without a Location"),
                )?)))
            }
            _ => Err(self.failure(&r, &format!("mounting {digest} from {from}"))),
        }
    }

    /// Opens an upload session; returns its URL.
    pub fn start_upload(&self) -> Result<String> {
        let url = self.url("blobs/uploads/");
        let r = self.request("POST", &url, &[], Body::Empty)?;
        if r.status != 202 {
            return Err(self.failure(
                &r,
                &format!("starting an upload to {}", self.reference.repo_key()),
            ));
        }
        Ok(self.absolute(
            r.header("Location")
                .ok_or_else(|| anyhow!("POST {url}: 202 without a Location"))?,
        ))
    }

    /// Uploads a blob: in one PUT (what Artifact Registry wants), or in
    /// chunks when `SLIMPACK_CHUNK_SIZE` (bytes) is set or the registry
    /// refuses a body that large (413). The registry checks the digest and
    /// commits only if it matches.
    pub fn upload(
        &self,
        location: &str,
        digest: &str,
        path: &Path,
        size: u64,
        progress: Option<&ProgressBar>,
    ) -> Result<()> {
        if let Some(chunk) = chunk_size()? {
            return self.upload_chunked(location, digest, path, size, progress, chunk);
        }
        let r = self.request(
            "PUT",
            &with_digest(location, digest),
            &[("Content-Type", "application/octet-stream")],
            Body::File {
                path,
                offset: 0,
                len: size,
                progress,
            },
        )?;
        match r.status {
            201 | 204 => Ok(()),
            413 => {
                let location = self.start_upload()?;
                self.upload_chunked(&location, digest, path, size, progress, DEFAULT_CHUNK)
            }
            _ => Err(self.failure(&r, &format!("uploading blob {digest}"))),
        }
    }

    fn upload_chunked(
        &self,
        location: &str,
        digest: &str,
        path: &Path,
        size: u64,
        progress: Option<&ProgressBar>,
        chunk: u64,
    ) -> Result<()> {
        let mut location = location.to_string();
        let mut offset = 0;
        if let Some(p) = progress {
            p.set_position(0);
        }
        while offset < size {
            let len = chunk.min(size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let r = self.request(
                "PATCH",
                &location,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                Body::File {
                    path,
                    offset,
                    len,
                    progress: None,
                },
            )?;
            if r.status != 202 {
                return Err(self.failure(&r, &format!("uploading chunk {range} of {digest}")));
            }
            if let Some(l) = r.header("Location") {
                location = self.absolute(l);
            }
            offset += len;
            if let Some(p) = progress {
                p.set_position(offset);
            }
        }
        let r = self.request("PUT", &with_digest(&location, digest), &[], Body::Empty)?;
        if r.status != 201 && r.status != 204 {
            return Err(self.failure(&r, &format!("closing the chunked upload of {digest}")));
        }
        Ok(())
    }

    /// PUTs manifest bytes under `reference` (tag or digest); returns the
    /// digest the registry reports.
    pub fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Option<String>> {
        let url = self.url(&format!("manifests/{reference}"));
        let r = self.request(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
        )?;
        if r.status != 201 && r.status != 200 && r.status != 202 {
            return Err(self.failure(
                &r,
                &format!("PUT manifest {}:{reference}", self.reference.repo_key()),
            ));
        }
        Ok(r.header("Docker-Content-Digest").map(str::to_string))
    }

    /// GETs a manifest: its bytes and media type.
    pub fn get_manifest(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        self.find_manifest(reference)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{}:{reference} not found in the registry (HTTP 404)",
                self.reference.repo_key()
            )
        })
    }

    /// GETs a manifest that may not exist: None on 404.
    pub fn find_manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, String)>> {
        let url = self.url(&format!("manifests/{reference}"));
        let r = self.request("GET", &url, &[("Accept", MANIFEST_ACCEPT)], Body::Empty)?;
        if r.status == 404 {
            return Ok(None);
        }
        if r.status != 200 {
            return Err(self.failure(
                &r,
                &format!("GET manifest {}:{reference}", self.reference.repo_key()),
            ));
        }
        let media_type = r
            .header("Content-Type")
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .unwrap_or_default();
        Ok(Some((r.body, media_type)))
    }

    /// Streams a blob into `store`, checking its digest before it is kept.
    pub fn fetch_blob(
        &self,
        digest: &str,
        store: &slimpack_oci::BlobStore,
        progress: Option<&ProgressBar>,
    ) -> Result<()> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut mismatch = None;
        let mut stored = false;
        let r = self.request_into(
            "GET",
            &url,
            &[],
            Body::Empty,
            Some(&mut |body: &mut dyn Read| {
                if let Some(p) = progress {
                    p.set_position(0);
                }
                let counted = Counted {
                    inner: body,
                    progress,
                };
                match store.put_reader(counted, Some(digest)) {
                    Ok(_) => stored = true,
                    // Not retried: a corrupt or substituted blob is refused.
                    Err(slimpack_oci::Error::DigestMismatch { actual, .. }) => {
                        mismatch = Some(actual)
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
                Ok(())
            }),
        )?;
        if let Some(actual) = mismatch {
            bail!(
                "blob {digest} from {} does not match its digest (got {actual}); nothing was stored",
                self.reference.repo_key()
            );
        }
        if r.status != 200 || !stored {
            return Err(self.failure(&r, &format!("GET blob {digest}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/python:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=https://x/token, service=x"),
            Some(Challenge::Bearer {
                realm: "https://x/token".into(),
                service: Some("x".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }

    #[test]
    fn an_oversized_manifest_is_an_error_asked_once() {
        let manifest_asks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let asks = manifest_asks.clone();
        let port = super::super::testing::serve(8, move |line| {
            if line.contains("/manifests/") {
                asks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Says 300 MB, sends a little, keeps the connection.
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 300000000\r\n\r\n{".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec()
            }
        });
        let r = Reference::parse(&format!("127.0.0.1:{port}/app:v1")).unwrap();
        let c = Client::connect(&r, "pull", &[], false).unwrap();
        let e = c.get_manifest("v1").unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("larger than 64 MiB"), "{e}");
        assert_eq!(
            manifest_asks.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "never retried"
        );
    }

    #[test]
    fn registry_errors_are_quoted() {
        let r = Reply {
            status: 400,
            headers: Default::default(),
            body: br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#.to_vec(),
        };
        assert_eq!(
            r.error_text(),
            "DIGEST_INVALID: provided digest did not match uploaded content"
        );
    }
}
