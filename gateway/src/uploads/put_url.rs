//! The URL an upload's bytes are PUT to, self-hosted: Nagare's own route, signed with a key kept
//! in the data dir, so (like a presigned S3 URL) it needs no bearer token and works only for its
//! upload and until it expires.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;
use crate::uploads::{hex, unhex};

/// Signs and checks self-hosted upload URLs.
pub struct PutUrls {
    key: Vec<u8>,
    /// Where the URLs point; `None`: the origin the client used.
    public_url: Option<String>,
}

impl PutUrls {
    pub fn new(key: Vec<u8>, public_url: Option<String>) -> Self {
        let public_url = public_url.map(|u| u.trim_end_matches('/').to_owned());
        Self { key, public_url }
    }

    fn mac(&self, upload_id: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(upload_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// `{origin}/v1/uploads/{id}/content?expires=…&signature=…`.
    pub fn url(&self, origin: &str, upload_id: &str, expires: u64) -> String {
        let signature = hex(&self.mac(upload_id, expires).finalize().into_bytes());
        let base = self.public_url.as_deref().unwrap_or(origin);
        format!("{base}/v1/uploads/{upload_id}/content?expires={expires}&signature={signature}")
    }

    /// Whether the signature is this key's for the upload and expiry (in constant time).
    pub fn verify(&self, upload_id: &str, expires: u64, signature: &str) -> Result<(), Error> {
        let bad = || Error::Forbidden("the upload URL's signature does not match".into());
        let bytes = unhex(signature).ok_or_else(bad)?;
        self.mac(upload_id, expires)
            .verify_slice(&bytes)
            .map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_verifies_for_its_upload_and_expiry_only() {
        let urls = PutUrls::new(b"k".to_vec(), None);
        let url = urls.url("http://127.0.0.1:8080", "up_1", 100);
        let signature = url.rsplit_once("signature=").unwrap().1;
        assert!(url.starts_with("http://127.0.0.1:8080/v1/uploads/up_1/content?expires=100&"));
        urls.verify("up_1", 100, signature).unwrap();
        assert!(urls.verify("up_2", 100, signature).is_err());
        assert!(urls.verify("up_1", 101, signature).is_err());
        assert!(urls.verify("up_1", 100, "zz").is_err());
        let other = PutUrls::new(b"other".to_vec(), Some("https://chat.example.com/".into()));
        assert!(other.verify("up_1", 100, signature).is_err());
        assert!(
            other
                .url("http://x", "up_1", 1)
                .starts_with("https://chat.example.com/v1/")
        );
    }
}
