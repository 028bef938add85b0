//! `grpc-timeout`: how long the client gives the whole call (gRPC over HTTP/2: 1 to 8 digits and
//! a unit, `H` `M` `S` `m` `u` `n`).

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::error::Error;

/// The instant the call must be over by, if the client set one.
pub fn deadline(metadata: &MetadataMap, now: Instant) -> Result<Option<Instant>, Error> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let parsed = value.to_str().ok().and_then(parse);
    match parsed {
        // A timeout too far out to add to `now` is no deadline at all.
        Some(timeout) => Ok(now.checked_add(timeout)),
        None => Err(Error::InvalidRequest(
            "grpc-timeout: expected 1 to 8 digits and a unit (H, M, S, m, u, n)".into(),
        )),
    }
}

fn parse(value: &str) -> Option<Duration> {
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match value.as_bytes().last()? {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_of_the_spec() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in ["", "S", "100", "123456789S", "1.5S", "-1S", "10s", "１S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "soon".parse().unwrap());
        let err = deadline(&metadata, Instant::now()).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_request");
    }

    #[test]
    fn no_header_no_deadline() {
        assert_eq!(deadline(&MetadataMap::new(), Instant::now()).unwrap(), None);
    }
}
