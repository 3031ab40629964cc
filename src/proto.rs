//! Generated Ironflow v1 wire messages (prost + pbjson serde), from `proto/`.

#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ironflow.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ironflow.v1.serde.rs"));
}

/// The compiled descriptors of `proto/` (a `google.protobuf.FileDescriptorSet`): every service
/// and method we define, for tools and tests that enumerate them.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ironflow_descriptor.bin"));
