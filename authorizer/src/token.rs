//! Finding the token in a request: `Authorization: Bearer`, a `token` query parameter (browsers
//! cannot set headers on a WebSocket), or a `bearer.<jwt>` WebSocket subprotocol.

/// The WebSocket subprotocol prefix that carries a token: `Sec-WebSocket-Protocol: nagare.v1, bearer.<jwt>`.
pub const SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The token of an `Authorization` header value, if it is a bearer credential.
pub fn from_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The token of a `Sec-WebSocket-Protocol` header value.
pub fn from_subprotocols(value: &str) -> Option<&str> {
    value
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(SUBPROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

/// The first token found, in order of preference: header, subprotocol, query.
pub fn find<'a>(
    authorization: Option<&'a str>,
    subprotocols: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    authorization
        .and_then(from_authorization)
        .or_else(|| subprotocols.and_then(from_subprotocols))
        .or_else(|| query_token.filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_where_clients_put_them() {
        assert_eq!(
            from_authorization("Bearer abc.def.ghi"),
            Some("abc.def.ghi")
        );
        assert_eq!(from_authorization("bearer  x "), Some("x"));
        assert_eq!(from_authorization("Basic dXNlcg=="), None);
        assert_eq!(from_authorization("Bearer "), None);
        assert_eq!(from_subprotocols("nagare.v1, bearer.a.b.c"), Some("a.b.c"));
        assert_eq!(from_subprotocols("nagare.v1"), None);
        assert_eq!(find(None, None, Some("q")), Some("q"));
        assert_eq!(
            find(Some("Bearer h"), Some("bearer.s"), Some("q")),
            Some("h")
        );
        assert_eq!(find(None, None, Some("")), None);
    }
}
