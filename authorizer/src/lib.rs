//! Nagare's JWT verification: one verifier for the API Gateway Lambda authorizer, the HTTP and
//! WebSocket server, and gRPC. OIDC and Cognito issuers are verified through their JWKS (cached,
//! with a refetch penalty box for unknown keys); dev mode uses an HS256 secret kept in the data
//! directory.

pub mod dev;
mod error;
mod jwks;
pub mod lambda;
mod principal;
mod settings;
pub mod token;
mod verifier;

pub use error::{AuthConfigError, AuthError, AuthFailure};
pub use principal::Principal;
pub use settings::{AuthSettings, IssuerSettings};
pub use verifier::{MAX_TOKEN_BYTES, Verifier, qualified};
