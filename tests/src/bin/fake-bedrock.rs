//! `fake-bedrock`: the test fake as a standalone server, for benchmarks and manual runs.

use clap::Parser;
use nagare_tests::FakeBedrock;

#[derive(Parser)]
#[command(
    name = "fake-bedrock",
    about = "A fake Bedrock Runtime speaking the real wire protocol"
)]
struct Args {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Args::parse();
    let fake = FakeBedrock::start().await?;
    println!("listening on {}", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
