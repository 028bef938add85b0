//! How a WebSocket connection ends: the close codes of RFC 6455 the server sends, and the code
//! for a read that failed by the client's fault.

pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
/// The client broke the protocol (an unmasked frame, reserved bits, a stray continuation).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
pub const POLICY: u16 = 1008;
/// A message over the protocol layer's size limit.
pub const TOO_BIG: u16 = 1009;
/// "Try again later": the client did not read fast enough.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The token the connection was opened (or last `auth`ed) with has expired: an application
/// code (4000–4999), after HTTP's 401.
pub const TOKEN_EXPIRED: u16 = 4401;

/// The close code and reason for a connection whose read failed: RFC 6455's for what the client
/// did wrong (1007 text that is not UTF-8, 1009 a message over the protocol layer's limit, 1002
/// any other protocol violation), and 1000 when the connection simply went away.
pub fn read_failure(e: &(dyn std::error::Error + 'static)) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut cause = Some(e);
    while let Some(error) = cause {
        if let Some(ws) = error.downcast_ref::<WsError>() {
            return match ws {
                WsError::Utf8(_) => (INVALID_DATA, "text must be UTF-8"),
                WsError::Capacity(_) => (TOO_BIG, "message too big"),
                WsError::Protocol(_) => (PROTOCOL_ERROR, "protocol error"),
                _ => (NORMAL, ""),
            };
        }
        cause = error.source();
    }
    (NORMAL, "")
}
