//! URLs that may carry secrets, and the one way sluicebox calls a web endpoint.
//!
//! - [`SecretUrl`]: a URL a job or the environment names (a webhook, whose path is the secret
//!   with most chat and incident hooks; an SMTP server with a password). It shows itself
//!   ([`Display`](std::fmt::Display) and [`Debug`]) as [`redact`] does, so a log line, a page,
//!   a summary or an error built from it holds no secret; [`SecretUrl::expose`] gives the URL
//!   to the code that connects.
//! - [`client`]: the HTTP client for webhooks. It follows no redirect (a hook answering 307
//!   would otherwise have the job's JSON POSTed wherever it names), and [`check`] and its
//!   resolver refuse plain `http` and every address on loopback, private, link-local
//!   (the cloud metadata address among them), shared or multicast ranges, unless
//!   [`ALLOW_PRIVATE`] is set (tests, and a deployment whose hooks are on its own network).
//!
//! Errors from here never carry the URL itself, only its redacted form.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable that lets webhooks use plain `http` and private, loopback and
/// link-local addresses (`true` or `1`).
pub const ALLOW_PRIVATE: &str = "SLUICEBOX_ALLOW_PRIVATE_ENDPOINTS";

/// `url` without its secrets: no user or password, no query or fragment, and for `http(s)`
/// no path (`https://hooks.example.com/…`). What is left names the service, which is what a
/// person reading a log needs. Text that is not a URL shows as `…`.
pub fn redact(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else { return "…".to_string() };
    let scheme = parsed.scheme();
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    let secret_path = matches!(scheme, "http" | "https");
    let path = parsed.path();
    let path = match path {
        "" | "/" => path.to_string(),
        _ if secret_path => "/…".to_string(),
        _ if !parsed.has_host() => return format!("{scheme}:…"),
        _ => path.to_string(),
    };
    let rest = if parsed.query().is_some() || parsed.fragment().is_some() { "?…" } else { "" };
    format!("{scheme}://{host}{path}{rest}")
}

/// A URL that may carry a secret: shown redacted everywhere, exposed only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, for the code that connects (never for a message).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretUrl({})", redact(&self.0))
    }
}

/// Whether [`ALLOW_PRIVATE`] is set.
pub fn private_allowed() -> bool {
    std::env::var(ALLOW_PRIVATE).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Whether `ip` is an address a webhook must not reach: loopback, private, link-local,
/// unspecified, shared (100.64/10), broadcast, multicast, or one of these as IPv4 in IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL before it is called: `https` (or `http` with [`ALLOW_PRIVATE`]), a
/// host, and no internal address written as the host. `what` names the setting in errors.
pub fn check(url: &SecretUrl, what: &str) -> Result<url::Url> {
    let allow = private_allowed();
    let parsed = url::Url::parse(url.expose()).map_err(|e| Error::config(what, format!("{url} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow => {}
        "http" => {
            return Err(Error::config(
                what,
                format!("{url} is plain http: webhooks must use https (set {ALLOW_PRIVATE}=true to allow http on a private network)"),
            ))
        }
        other => return Err(Error::config(what, format!("{url}: a webhook is https://, not {other}://"))),
    }
    let host = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Error::config(what, format!("{url} names no host"))),
    };
    if let Some(ip) = host.filter(|&ip| !allow && is_internal(ip)) {
        tracing::warn!(url = %url, address = %ip, "refused a webhook to an internal address");
        return Err(Error::config(
            what,
            format!("{url} is {ip}, an internal address: refused (set {ALLOW_PRIVATE}=true to allow it)"),
        ));
    }
    Ok(parsed)
}

/// A resolver that drops internal addresses (unless [`ALLOW_PRIVATE`]): a public name that
/// resolves to the metadata address or a private host is refused, not reached.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allow = private_allowed();
            let public: Vec<SocketAddr> = found.iter().copied().filter(|a| allow || !is_internal(a.ip())).collect();
            if public.is_empty() {
                let shown = found.first().map_or("nothing".to_string(), |a| a.ip().to_string());
                tracing::warn!(host = %host, address = %shown, "refused a webhook host that resolves only to internal addresses");
                return Err(format!("{host} resolves to {shown}, an internal address: refused").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client for webhooks: no redirects, internal addresses refused at resolution,
/// `timeout` per request.
pub fn client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PublicOnly))
        .build()
        .map_err(|e| Error::backend(crate::error::Backend::Webhook, "client", e.without_url()))
}

/// POSTs `body` (JSON) to `url` once, after [`check`]. `Ok(status)` for any answer (a redirect
/// is an answer, not followed); errors name the URL redacted only.
pub async fn post_json(
    client: &reqwest::Client,
    url: &SecretUrl,
    what: &str,
    body: Vec<u8>,
) -> Result<reqwest::StatusCode> {
    let parsed = check(url, what)?;
    let response = client
        .post(parsed)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Webhook, format!("POST {url}"), error_text(e)))?;
    Ok(response.status())
}

/// A reqwest error's text without its URL, with its causes (a refused resolution says why).
fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_userinfo_query_and_a_web_path() {
        let cases = [
            ("https://hooks.example.com/services/T0/B0/secret?x=1", "https://hooks.example.com/…?…"),
            ("https://example.com/", "https://example.com/"),
            ("https://example.com", "https://example.com/"),
            ("smtp://user:PASSWORD@mail.example.com:587", "smtp://mail.example.com:587"),
            ("smtps://user:PASSWORD@mail.example.com/", "smtps://mail.example.com/"),
            ("https://u:p@h.example/", "https://h.example/"),
            ("http://127.0.0.1:9/x#frag", "http://127.0.0.1:9/…?…"),
            ("s3://bucket/key/of/object", "s3://bucket/key/of/object"),
            ("postgres://app:hunter2@db:5432/orders", "postgres://db:5432/orders"),
            ("not a url with hunter2", "…"),
            ("mailto:someone@example.com", "mailto:…"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
            let secret = SecretUrl::new(url);
            assert_eq!(secret.to_string(), want);
            assert!(!format!("{secret:?}").contains("hunter2") && !format!("{secret:?}").contains("PASSWORD"));
        }
    }

    #[test]
    fn internal_addresses_are_known() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "ff02::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1", "172.32.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
