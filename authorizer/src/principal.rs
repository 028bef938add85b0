//! Who a verified token speaks for.

use serde::Serialize;

/// The caller, from a verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The subject: a stable user or client id. Owner of conversations and tasks.
    pub sub: String,
    /// The isolation unit of the cache and of limits: the tenant claim, or `sub` without one.
    pub tenant: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    /// The principal as one string, for keys that isolate or count per principal (limits,
    /// WebSocket seats, fair task queues). The tenant's length comes first, so no tenant and
    /// subject pair can spell another's (`a/b` + `c` and `a` + `b/c` differ).
    pub fn key(&self) -> String {
        format!("{}:{}/{}", self.tenant.len(), self.tenant, self.sub)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Fails with [`crate::AuthError::MissingScope`] unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), crate::AuthError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(crate::AuthError::MissingScope(scope.to_owned()))
        }
    }
}
