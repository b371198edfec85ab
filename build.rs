//! Compiles the gRPC API and KEDA's external scaler interface in proto/ with protox, so that
//! no system protoc is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/gristmill/v1/cluster.proto",
        "proto/gristmill/v1/grains.proto",
        "proto/gristmill/v1/scaling.proto",
        "proto/keda/externalscaler.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_path = PathBuf::from(env::var("OUT_DIR")?).join("gristmill_descriptor.bin");
    {
        use protox::prost::Message as _;
        std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
