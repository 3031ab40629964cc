//! Generated Ironflow v1 wire messages (prost + pbjson serde), from `proto/`.

#[allow(clippy::all, clippy::pedantic, missing_docs, unused_qualifications)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/ironflow.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/ironflow.v1.serde.rs"));
}
