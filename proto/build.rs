//! Compiles the `.proto` files with protox (pure Rust, so no system `protoc` is needed) and
//! generates the prost messages and tonic stubs. The encoded descriptor set is kept for
//! server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "invest/portfolio/v1/portfolio.proto",
    "invest/deposit/v1/deposit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::Compiler::new(["."])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("invest_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    // Clients are generic over their transport: no `connect` helpers, so that the wire crate
    // needs no HTTP stack of its own.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
