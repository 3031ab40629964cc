//! Compiles the worker stream's proto (`WorkerService/Connect`, ironflow-py's schema, with the
//! `types.proto` it imports) with protox (no protoc download) into prost messages and a tonic
//! client; the SDK never serves the stream.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/ironflow/v1/worker.proto",
        "../../proto/ironflow/v1/types.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(["../../proto/ironflow/v1/worker.proto"], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // No `connect` constructor on the client: it would clash with `WorkerService.Connect`
        // (the worker builds its channel itself).
        .build_transport(false)
        .build_server(false)
        .skip_protoc_run()
        .compile_fds(fds)?;
    Ok(())
}
