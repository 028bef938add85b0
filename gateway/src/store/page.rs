//! Page tokens: opaque to clients (base64url JSON), the same for both backends, and checked on
//! the way in so a malformed or foreign token is a 400, not a store error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Where a listing of conversations stopped: the last item's `updated_at` and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationCursor {
    pub u: u64,
    pub c: String,
}

/// Where a listing of turns stopped: the last turn's exchange and role (0 user, 1 assistant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnCursor {
    pub e: u64,
    pub r: u8,
}

pub fn encode<T: Serialize>(cursor: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub fn decode<T: for<'de> Deserialize<'de>>(token: &str) -> Result<T, Error> {
    let bad = || Error::InvalidRequest("page_token: not a token this server issued".into());
    if token.len() > 512 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_a_400() {
        let c = ConversationCursor {
            u: 17,
            c: "abc".into(),
        };
        assert_eq!(decode::<ConversationCursor>(&encode(&c)).unwrap(), c);
        for bad in ["", "!!!", "eyJ4IjoxfQ", &"a".repeat(600)] {
            let e = decode::<ConversationCursor>(bad).unwrap_err();
            assert_eq!(e.code().as_str(), "invalid_request", "{bad}");
        }
        assert!(decode::<TurnCursor>(&encode(&c)).is_err());
    }
}
