//! moto's server (PyPI `moto[server]`), which speaks the DynamoDB and SQS wire protocols, on a
//! free loopback port. One server per test process: started on first use, and gone when the
//! process exits (it watches its stdin, which closes with us).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nagare_gateway::store::{TableNames, create_tables};

use crate::test_sdk_config;

// moto applies a transaction item by item and rolls back by restoring a snapshot, so two
// concurrent transactions can see or undo each other's writes. DynamoDB's are serializable; one
// lock around the app gives moto the same guarantee (at the cost of handling one request at a time).
const LAUNCHER: &str = "
import logging, os, sys, threading
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
logging.getLogger('werkzeug').setLevel(logging.ERROR)
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))
server = make_server('127.0.0.1', 0, serialized, True, request_handler=MotoRequestHandler)
threading.Thread(target=server.serve_forever, daemon=True).start()
host, port = server.server_address[:2]
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

fn start() -> Moto {
    let python = crate::python();
    let install = crate::INSTALL_PYTHON;
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

/// The tests' AWS config with every service pointed at moto, for a gateway's wiring.
pub fn sdk_config() -> aws_config::SdkConfig {
    test_sdk_config().into_builder().endpoint_url(url()).build()
}

/// A DynamoDB client pointed at moto.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&test_sdk_config())
        .endpoint_url(url())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An SQS client for moto's server.
pub fn sqs() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::from(&test_sdk_config())
        .endpoint_url(url())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// An S3 client for moto's server, path-style (a bucket cannot be a subdomain of 127.0.0.1).
pub fn s3() -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&test_sdk_config())
        .endpoint_url(url())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A fresh task queue and its dead-letter queue, which takes messages received more than
/// `max_receives` times: (queue URL, dead-letter queue URL).
pub async fn task_queues(
    client: &aws_sdk_sqs::Client,
    max_receives: u32,
) -> anyhow::Result<(String, String)> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let suffix = uuid_like();
    let dlq = client
        .create_queue()
        .queue_name(format!("tasks-dlq-{suffix}"))
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receives});
    let queue = client
        .create_queue()
        .queue_name(format!("tasks-{suffix}"))
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    Ok((queue, dlq))
}

/// Fresh tables shaped like the deployed ones, under unique names so tests sharing the server
/// do not see each other's items.
pub async fn tables(client: &aws_sdk_dynamodb::Client) -> anyhow::Result<TableNames> {
    let suffix = uuid_like();
    let names = TableNames {
        connections: format!("connections-{suffix}"),
        conversations: format!("conversations-{suffix}"),
        cache: format!("cache-{suffix}"),
        limits: format!("limits-{suffix}"),
        tasks: format!("tasks-{suffix}"),
        uploads: format!("uploads-{suffix}"),
    };
    create_tables(client, &names).await?;
    Ok(names)
}

/// A fresh S3 bucket on moto's server.
pub async fn bucket(client: &aws_sdk_s3::Client) -> anyhow::Result<String> {
    let name = format!("nagare-{}", uuid_like());
    client.create_bucket().bucket(&name).send().await?;
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
