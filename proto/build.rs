//! Compiles `nagare/v1/*.proto` with protox (pure Rust: no system `protoc`), generates the
//! messages, clients and servers, and writes the encoded descriptor set that server reflection
//! serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "nagare/v1/chat.proto",
    "nagare/v1/conversations.proto",
    "nagare/v1/tasks.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let files = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("nagare_v1_descriptor.bin"),
        files.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(files)?;
    Ok(())
}
