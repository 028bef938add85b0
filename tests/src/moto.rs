//! moto's server (PyPI `moto[server]`), which speaks the DynamoDB and SQS wire protocols, on a
//! free loopback port. One server per test process: started on first use, and gone when the
//! process exits (it watches its stdin, which closes with us).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};

use crate::test_sdk_config;

const LAUNCHER: &str = "
import logging, os, sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
logging.getLogger('werkzeug').setLevel(logging.ERROR)
server.start()
host, port = server.get_host_and_port()
print(f'http://{host}:{port}', flush=True)
sys.stdin.read()
os._exit(0)
";

struct Moto {
    url: String,
    // Held so the child's stdin stays open for as long as this process lives.
    _child: Mutex<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The Python of the test venv (`tests/.venv`, made by `tests/run.sh`), or `NAGARE_TEST_PYTHON`.
fn python() -> PathBuf {
    std::env::var_os("NAGARE_TEST_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        PathBuf::from,
    )
}

fn start() -> Moto {
    let python = python();
    let install = "run tests/run.sh once, or: python3 -m venv tests/.venv && \
                   tests/.venv/bin/pip install -r tests/requirements.txt";
    let mut child = Command::new(&python)
        .args(["-c", LAUNCHER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto with {}: {e}; {install}",
                python.display()
            )
        });
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let url = line.trim().to_owned();
    assert!(
        url.starts_with("http://"),
        "moto's server did not start (is moto[server] installed in {}?); {install}",
        python.display()
    );
    Moto {
        url,
        _child: Mutex::new(child),
    }
}

/// The URL of this process's moto server, starting it on first use.
pub fn url() -> &'static str {
    &MOTO.get_or_init(start).url
}

/// A DynamoDB client pointed at moto.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&test_sdk_config())
        .endpoint_url(url())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A fresh connections table shaped like the deployed one (PK `connection_id`, TTL `ttl`),
/// under a unique name so tests sharing the server do not see each other's items.
pub async fn connections_table(client: &aws_sdk_dynamodb::Client) -> anyhow::Result<String> {
    let name = format!("connections-{}", uuid_like());
    client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("connection_id")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("connection_id")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;
    client
        .update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("ttl")
                .build()?,
        )
        .send()
        .await?;
    Ok(name)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
