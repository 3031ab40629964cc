//! Compiles `proto/` with protox (no protoc download), generates prost messages,
//! tonic service stubs and pbjson serde impls (canonical proto-JSON).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/ironflow/v1/types.proto",
        "proto/ironflow/v1/ironflow.proto",
        "proto/ironflow/v1/pubsub.proto",
        "proto/ironflow/v1/webhook.proto",
        "proto/ironflow/v1/worker.proto",
        "proto/ironflow/v1/timetravel.proto",
        "proto/ironflow/v1/entity_stream.proto",
        "proto/ironflow/v1/event_schema.proto",
        "proto/ironflow/v1/projection.proto",
        "proto/ironflow/v1/query.proto",
        "proto/ironflow/v1/environment.proto",
        "proto/ironflow/v1/audit.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("ironflow_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        // No `connect` constructor on clients: it would clash with `WorkerService.Connect`
        // (tests build their channel themselves).
        .build_transport(false)
        .build_server(true)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        .build(&[".ironflow"])?;
    Ok(())
}
