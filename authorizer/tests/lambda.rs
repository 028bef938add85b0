//! The Lambda authorizer called with real-shaped API Gateway REQUEST authorizer events.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use aws_lambda_events::iam::IamPolicyEffect;
use nagare_authorizer::dev::{self, DevClaims};
use nagare_authorizer::lambda::{AuthorizerError, authorize};
use nagare_authorizer::{AuthSettings, Verifier};

const SECRET: &[u8] = b"lambda-test-secret-32-bytes-long";

fn verifier() -> Verifier {
    Verifier::new(&AuthSettings::default(), Some(SECRET)).unwrap()
}

fn token(scopes: &[&str]) -> String {
    let claims = DevClaims {
        sub: "alice".into(),
        tenant: Some("acme".into()),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl: Duration::from_secs(300),
    };
    dev::mint(SECRET, &claims).unwrap()
}

fn event(
    fixture: &str,
    placeholder: &str,
    value: &str,
) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace(placeholder, value);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn websocket_connect_with_a_query_token_is_allowed_with_context() {
    let e = event("websocket-connect.json", "{{TOKEN}}", &token(&["chat"]));
    let r = authorize(&verifier(), "chat", &e).await.unwrap();
    assert_eq!(r.principal_id.as_deref(), Some("alice"));
    let statement = &r.policy_document.statement[0];
    assert_eq!(statement.effect, IamPolicyEffect::Allow);
    assert_eq!(statement.action, ["execute-api:Invoke"]);
    assert_eq!(
        statement.resource,
        ["arn:aws:execute-api:us-east-1:123456789012:abcdef1234/production/$connect"]
    );
    assert_eq!(r.context.sub, "alice");
    assert_eq!(r.context.tenant, "acme");
    assert_eq!(r.context.scopes, "chat");
    // API Gateway requires string context values, and the whole response must stay small.
    let json = serde_json::to_value(&r).unwrap();
    assert!(
        json["context"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.is_string())
    );
    assert_eq!(json["policyDocument"]["Version"], "2012-10-17");
    assert!(json.to_string().len() < 8 * 1024);
}

#[tokio::test]
async fn rest_request_with_a_bearer_header_is_allowed() {
    let e = event(
        "rest-request.json",
        "{{AUTHORIZATION}}",
        &format!("Bearer {}", token(&["chat", "tasks"])),
    );
    let r = authorize(&verifier(), "chat", &e).await.unwrap();
    assert_eq!(
        r.policy_document.statement[0].effect,
        IamPolicyEffect::Allow
    );
    assert_eq!(r.context.scopes, "chat tasks");
}

#[tokio::test]
async fn a_token_without_the_scope_gets_a_deny_policy() {
    let e = event("websocket-connect.json", "{{TOKEN}}", &token(&["profile"]));
    let r = authorize(&verifier(), "chat", &e).await.unwrap();
    assert_eq!(r.policy_document.statement[0].effect, IamPolicyEffect::Deny);
    assert_eq!(r.principal_id.as_deref(), Some("alice"));
}

#[tokio::test]
async fn bad_or_missing_tokens_are_unauthorized() {
    let other_secret = dev::mint(
        b"another-secret-entirely-32-bytes",
        &DevClaims {
            sub: "mallory".into(),
            tenant: None,
            scopes: vec!["chat".into()],
            ttl: Duration::from_secs(300),
        },
    )
    .unwrap();
    for bad in ["", "garbage", "a.b.c", other_secret.as_str()] {
        let e = event("websocket-connect.json", "{{TOKEN}}", bad);
        let err = authorize(&verifier(), "chat", &e).await.unwrap_err();
        assert!(matches!(err, AuthorizerError::Unauthorized), "{bad:?}");
        // API Gateway turns exactly this message into a 401.
        assert_eq!(
            lambda_runtime::Diagnostic::from(err).error_message,
            "Unauthorized"
        );
    }
    let e = event(
        "rest-request.json",
        "{{AUTHORIZATION}}",
        "Basic YWxpY2U6cHc=",
    );
    assert!(matches!(
        authorize(&verifier(), "chat", &e).await,
        Err(AuthorizerError::Unauthorized)
    ));
}

#[tokio::test]
async fn a_query_token_counts_only_on_the_websocket_connect() {
    let path = format!(
        "{}/tests/fixtures/rest-request.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut rest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rest["headers"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");
    rest["multiValueHeaders"]
        .as_object_mut()
        .unwrap()
        .remove("Authorization");
    rest["queryStringParameters"] = serde_json::json!({ "token": token(&["chat"]) });
    let e: ApiGatewayCustomAuthorizerRequestTypeRequest = serde_json::from_value(rest).unwrap();
    assert!(matches!(
        authorize(&verifier(), "chat", &e).await,
        Err(AuthorizerError::Unauthorized)
    ));
}
