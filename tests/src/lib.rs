//! Nagare's test infrastructure: wire-level fakes of the services Nagare talks to, harnesses that
//! start Nagare in-process, and the load generator. The end-to-end tests live in `tests/tests/`.

pub mod fake_apigw;
pub mod fake_bedrock;
pub mod fake_issuer;
pub mod fake_lambda;
pub mod harness;
pub mod load;
pub mod load_ws;
pub mod moto;
pub mod redis_server;
pub mod serve;
pub mod ws_client;

pub use fake_bedrock::FakeBedrock;
pub use fake_issuer::{FakeIssuer, TestKey};
pub use fake_lambda::FakeLambdaRuntime;
pub use harness::{Gateway, authed_client, bedrock_provider, dev_token, test_sdk_config};
