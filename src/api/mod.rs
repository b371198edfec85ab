//! gRPC services over the node runtime, and the mapping of errors to status codes.

mod cluster;
mod convert;
mod grains;
mod keda;
mod migrate;
mod scaling;
mod server;
mod status;

pub use cluster::ClusterService;
pub use grains::GrainsService;
pub use keda::KedaScalerService;
pub use scaling::ScalingService;
pub(crate) use server::{serve, set_health};
pub use status::{ERROR_CODE_METADATA, call_error_status};

/// Types and service stubs generated from `proto/gristmill/v1/*.proto`.
#[allow(missing_docs)] // Generated code; the documentation lives in the .proto files.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("gristmill.v1");

    /// Encoded file descriptor set of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/gristmill_descriptor.bin"));
}

/// Types and service stubs generated from `proto/keda/externalscaler.proto`, KEDA's external
/// scaler interface.
#[allow(missing_docs)] // Generated code; the documentation lives in the .proto file.
#[allow(clippy::all)]
pub mod keda_pb {
    tonic::include_proto!("externalscaler");
}
