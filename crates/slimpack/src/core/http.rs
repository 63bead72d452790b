//! One HTTP client for everything slimpack fetches (Debian archive, PyPI).
//!
//! Trust comes from the host's CA bundle (`SSL_CERT_FILE`, else Debian's
//! `/etc/ssl/certs/ca-certificates.crt`), so a TLS-intercepting corporate
//! proxy works as it does for curl and pip; proxies come from the usual
//! environment variables. Nothing here is ever written into an image.

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The host CA bundle, if there is one.
pub fn host_ca_bundle() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from),
        Some("/etc/ssl/certs/ca-certificates.crt".into()),
        Some("/etc/pki/tls/certs/ca-bundle.crt".into()),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// How long a connection may take to open, and how long a reply may stay
/// silent (before its headers or between two reads of its body), in
/// seconds: `SLIMPACK_HTTP_CONNECT_TIMEOUT` (default 20) and
/// `SLIMPACK_HTTP_IDLE_TIMEOUT` (default 60). A reply that stalls fails and
/// is retried like any network fault; no read waits forever.
pub fn timeouts() -> (Duration, Duration) {
    let secs = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(default)
    };
    (
        Duration::from_secs(secs("SLIMPACK_HTTP_CONNECT_TIMEOUT", 20)),
        Duration::from_secs(secs("SLIMPACK_HTTP_IDLE_TIMEOUT", 60)),
    )
}

fn build_agent(proxy: bool) -> ureq::Agent {
    let (connect, idle) = timeouts();
    agent_with(proxy, connect, idle)
}

fn agent_with(proxy: bool, connect: Duration, idle: Duration) -> ureq::Agent {
    let mut tls = TlsConfig::builder();
    if let Some(bundle) = host_ca_bundle().and_then(|p| std::fs::read(p).ok()) {
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&bundle)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
    }
    let config = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .proxy(if proxy {
            ureq::Proxy::try_from_env()
        } else {
            None
        })
        // A redirect to the same host over https keeps the credentials (a
        // registry that redirects within itself must not see them dropped
        // and then blamed); to any other host they are never sent.
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(connect))
        .timeout_per_read(Some(idle))
        .timeout_global(Some(Duration::from_secs(1800)))
        .http_status_as_error(false)
        .user_agent(concat!("slimpack/", env!("CARGO_PKG_VERSION")))
        // Parallel downloads reuse their connections instead of opening
        // (and resolving) new ones.
        .max_idle_connections_per_host(8)
        .max_idle_connections(32)
        .build();
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        CachingResolver::default(),
    )
}

/// Resolves each host once per run. Seen here: a resolver that drops some
/// of several concurrent queries, so that every new connection risked
/// glibc's 5 s retry (a cold build went from 6 s to 11 s); a CLI run is
/// short enough that addresses do not go stale.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    seen: std::sync::Mutex<
        std::collections::HashMap<String, ureq::unversioned::resolver::ResolvedSocketAddrs>,
    >,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        if let Some(a) = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, addrs.clone());
        Ok(addrs)
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| build_agent(true))
}

/// The agent for `url`: loopback hosts and the GCE metadata server are
/// reached directly, never through a proxy from the environment.
pub fn agent_for(url: &str) -> &'static ureq::Agent {
    static DIRECT: OnceLock<ureq::Agent> = OnceLock::new();
    let host = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let metadata = std::env::var("GCE_METADATA_HOST").ok();
    if is_loopback_host(host)
        || host == "metadata.google.internal"
        || metadata.as_deref() == Some(host)
    {
        DIRECT.get_or_init(|| build_agent(false))
    } else {
        agent()
    }
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Statuses worth another attempt: rate limits, timeouts, server errors.
pub fn retriable(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status) && status != 501
}

/// How long to wait before attempt `attempt + 1`: the server's
/// Retry-After (up to 10 s), else exponential from 250 ms.
pub fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    let hinted = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(10)));
    hinted.unwrap_or_else(|| Duration::from_millis(250 * 2u64.pow(attempt.min(4))))
}

/// GETs `url` into memory, retrying connection failures and 5xx/429 with
/// backoff. A 404 is returned as an error naming the URL at once.
pub fn get(url: &str, progress: Option<&ProgressBar>) -> Result<Vec<u8>> {
    get_accept(url, None, progress)
}

/// [`get`] with an `Accept` header (PyPI's JSON simple API needs one).
pub fn get_accept(
    url: &str,
    accept: Option<&str>,
    progress: Option<&ProgressBar>,
) -> Result<Vec<u8>> {
    let mut last = None;
    let mut retry_after: Option<String> = None;
    for attempt in 0..4u32 {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt, retry_after.take().as_deref()));
        }
        let mut req = agent().get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        match req.call() {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if status == 200 {
                    let len = resp.body().content_length();
                    let mut reader = resp.into_body().into_reader();
                    let mut buf = Vec::with_capacity(len.unwrap_or(0) as usize);
                    let mut chunk = vec![0u8; 256 * 1024];
                    let res: std::io::Result<()> = (|| loop {
                        let n = reader.read(&mut chunk)?;
                        if n == 0 {
                            return Ok(());
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(pb) = progress {
                            pb.inc(n as u64);
                        }
                    })();
                    match res {
                        Ok(()) => return Ok(buf),
                        Err(e) => {
                            if let Some(pb) = progress {
                                pb.dec(buf.len() as u64);
                            }
                            last = Some(anyhow::anyhow!("reading {url}: {e}"));
                            continue;
                        }
                    }
                }
                if retriable(status) {
                    retry_after = resp
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    last = Some(anyhow::anyhow!("GET {url}: HTTP {status}"));
                    continue;
                }
                bail!("GET {url}: HTTP {status}");
            }
            Err(e) => last = Some(anyhow::anyhow!("GET {url}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("GET {url} failed")))
        .context("the network request failed after 4 attempts (check connectivity, proxy variables and SSL_CERT_FILE)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_stalls_fails_after_the_idle_timeout() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, sends headers, then stalls mid-body.
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst");
            std::thread::sleep(Duration::from_secs(20));
        });
        let agent = agent_with(false, Duration::from_secs(2), Duration::from_secs(1));
        let t = std::time::Instant::now();
        let got = agent
            .get(format!("http://127.0.0.1:{port}/x"))
            .call()
            .and_then(|r| r.into_body().read_to_vec());
        assert!(got.is_err(), "a stalled body must fail");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "it took {:?}",
            t.elapsed()
        );
    }

    /// Credentials survive a redirect within the same host and never go to
    /// another one.
    #[test]
    fn redirects_keep_credentials_only_on_the_same_host() {
        use std::io::{BufRead, BufReader, Write};
        let serve = |to: Option<String>| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, bool)>::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for s in listener.incoming().flatten().take(4) {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = r.read_line(&mut line);
                    let mut auth = false;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) <= 2 {
                            break;
                        }
                        auth |= h.to_ascii_lowercase().starts_with("authorization:");
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    log.lock().unwrap().push((path.clone(), auth));
                    let mut s = s;
                    // One request per connection: a connection the client
                    // kept for the redirect would meet a closed socket.
                    let reply = match (&to, path.as_str()) {
                        (Some(t), "/a") => format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {t}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                        (None, "/a") => format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}/b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string(),
                    };
                    let _ = s.write_all(reply.as_bytes());
                }
            });
            (port, seen)
        };
        let agent = agent_with(false, Duration::from_secs(5), Duration::from_secs(5));
        // Same host: the credentials follow.
        let (port, seen) = serve(None);
        let r = agent
            .get(format!("http://127.0.0.1:{port}/a"))
            .header("Authorization", "Bearer secret")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            *seen.lock().unwrap(),
            [("/a".to_string(), true), ("/b".to_string(), true)]
        );
        // Another host name: never.
        let (other, other_seen) = serve(None);
        let (port, _) = serve(Some(format!("http://localhost:{other}/b")));
        agent
            .get(format!("http://127.0.0.1:{port}/a"))
            .header("Authorization", "Bearer secret")
            .call()
            .unwrap();
        assert_eq!(*other_seen.lock().unwrap(), [("/b".to_string(), false)]);
    }

    #[test]
    fn retries_only_what_may_pass_later() {
        for s in [429, 500, 502, 503, 504, 408] {
            assert!(retriable(s), "{s}");
        }
        for s in [200, 201, 400, 401, 403, 404, 413, 501] {
            assert!(!retriable(s), "{s}");
        }
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(2, None), Duration::from_millis(1000));
        assert!(backoff(9, None) <= Duration::from_secs(4));
    }
}
