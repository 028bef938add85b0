//! Callbacks: a finished task is POSTed to its `callback_url`, signed, retried with backoff.
//!
//! The signature header is `Nagare-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"`, so a receiver can check both who sent it and when (refuse old ones).
//!
//! SSRF guard: only `https` URLs, except `http` to a loopback address when auth is in dev mode.
//! The host is resolved here and every address must be public (not private, loopback,
//! link-local, unique-local, CGNAT, multicast or unspecified) unless the host is allow-listed;
//! the post then goes to the address that was checked, so DNS cannot change it in between.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Url;
use sha2::Sha256;

use crate::error::Error;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "nagare-signature";

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], unix_secs: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_secs},v1={hex}")
}

/// Addresses a callback may never reach unless its host is allow-listed.
fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                // Carrier-grade NAT, and 0.0.0.0/8.
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a callback URL's form: `https`, or `http` to loopback in dev mode; a host; no
/// credentials. Returns it parsed.
pub fn check_callback_url(raw: &str, dev_mode: bool) -> Result<Url, Error> {
    let bad = |why: &str| Error::InvalidRequest(format!("callback_url: {why}"));
    if raw.len() > 2048 {
        return Err(bad("longer than 2048 characters"));
    }
    let url = Url::parse(raw).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    let Some(host) = url.host_str() else {
        return Err(bad("has no host"));
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if dev_mode && loopback_host(host) => Ok(url),
        "http" => Err(bad(
            "must be https (http is accepted only to a loopback address, in dev mode)",
        )),
        other => Err(bad(&format!("scheme {other} is not allowed; use https"))),
    }
}

fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Posts finished tasks to their callbacks.
pub struct Callbacks {
    secret: Vec<u8>,
    attempts: u32,
    timeout: Duration,
    allow_hosts: Vec<String>,
    dev_mode: bool,
    /// First retry after this; doubling, at most 30 s.
    backoff: Duration,
}

impl Callbacks {
    pub fn new(secret: Vec<u8>, settings: &super::TaskSettings, dev_mode: bool) -> Self {
        Self {
            secret,
            attempts: settings.callback_attempts.max(1),
            timeout: Duration::from_millis(settings.callback_timeout_ms),
            allow_hosts: settings.callback_allow_hosts.clone(),
            dev_mode,
            backoff: Duration::from_millis(500),
        }
    }

    /// Shortens the retry backoff, for tests.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The URL checked, and the address to post to: every address the host resolves to must be
    /// allowed.
    pub async fn vet(&self, raw: &str) -> Result<(Url, SocketAddr), Error> {
        let url = check_callback_url(raw, self.dev_mode)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|e| {
                Error::InvalidRequest(format!("callback_url: cannot resolve {host}: {e}"))
            })?
            .collect();
        let allowed = self
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&bare))
            || (self.dev_mode && url.scheme() == "http" && loopback_host(&host));
        match addrs.first() {
            None => Err(Error::InvalidRequest(format!(
                "callback_url: {host} resolves to no address"
            ))),
            Some(_) if !allowed && addrs.iter().any(|a| forbidden(a.ip())) => {
                Err(Error::InvalidRequest(format!(
                    "callback_url: {host} resolves to a private, loopback or link-local address; \
                     allow-list it in tasks.callback_allow_hosts if it is yours"
                )))
            }
            Some(addr) => Ok((url, *addr)),
        }
    }

    /// Posts `body` for `task_id` until it is accepted (2xx) or the attempts run out; returns
    /// whether it was delivered and the attempts made. A 4xx other than 408 and 429 is final.
    pub async fn deliver(&self, task_id: &str, raw_url: &str, body: &[u8]) -> (bool, u32) {
        let mut wait = self.backoff;
        for attempt in 1..=self.attempts {
            match self.post(task_id, raw_url, body).await {
                Ok(()) => return (true, attempt),
                Err(Final(why)) => {
                    tracing::warn!(task_id, attempt, reason = %why, "task callback refused");
                    return (false, attempt);
                }
                Err(Retry(why)) => {
                    tracing::info!(task_id, attempt, reason = %why, "task callback failed");
                }
            }
            if attempt < self.attempts {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
        (false, self.attempts)
    }

    async fn post(&self, task_id: &str, raw_url: &str, body: &[u8]) -> Result<(), Failure> {
        let (url, addr) = self.vet(raw_url).await.map_err(|e| Final(e.to_string()))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        // Connect to the address just checked, whatever DNS says next.
        let client = reqwest::Client::builder()
            .resolve(&host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .build()
            .map_err(|e| Retry(e.to_string()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("nagare-task-id", task_id)
            .header(SIGNATURE_HEADER, sign(&self.secret, now, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Retry(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status != 408 && status != 429 {
            Err(Final(format!("the receiver answered {status}")))
        } else {
            Err(Retry(format!("the receiver answered {status}")))
        }
    }
}

enum Failure {
    Retry(String),
    Final(String),
}

use Failure::{Final, Retry};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_time_the_key_and_the_body() {
        let sig = sign(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(sig.starts_with("t=0,v1=") && sig.len() == "t=0,v1=".len() + 64);
        assert_ne!(sig, sign(b"Jefe", 1, b"what do ya want for nothing?"));
        assert_ne!(sig, sign(b"jefe", 0, b"what do ya want for nothing?"));
        assert_ne!(sig, sign(b"Jefe", 0, b"what do ya want for nothing!"));
    }

    #[test]
    fn rfc_4231_vector_holds_for_the_primitive() {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_https_or_dev_loopback_http() {
        assert!(check_callback_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_callback_url("http://127.0.0.1:9000/x", true).is_ok());
        assert!(check_callback_url("http://[::1]:9000/x", true).is_ok());
        for (url, dev) in [
            ("http://127.0.0.1:9000/x", false),
            ("http://hooks.example.com/x", true),
            ("ftp://hooks.example.com/x", false),
            ("https://user:pw@hooks.example.com/x", false),
            ("not a url", false),
            ("https://", false),
        ] {
            let e = check_callback_url(url, dev).unwrap_err();
            assert_eq!(e.code().as_str(), "invalid_request", "{url}");
            assert!(e.to_string().contains("callback_url"), "{url}: {e}");
        }
    }

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn vetting_refuses_hosts_that_resolve_inward() {
        let settings = super::super::TaskSettings::default();
        let prod = Callbacks::new(b"k".to_vec(), &settings, false);
        for url in [
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://[::1]/x",
        ] {
            let e = prod.vet(url).await.unwrap_err();
            assert!(e.to_string().contains("private, loopback"), "{url}: {e}");
        }
        let allowed = Callbacks::new(
            b"k".to_vec(),
            &super::super::TaskSettings {
                callback_allow_hosts: vec!["localhost".into()],
                ..settings
            },
            false,
        );
        assert!(allowed.vet("https://localhost/x").await.is_ok());
    }
}
