// Compiles the project's own .proto files (protoc must be on PATH: `make deps` installs it).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let protos = [
        "envoy/type/v3/ratelimit_unit.proto",
        "envoy/config/core/v3/base.proto",
        "envoy/extensions/common/ratelimit/v3/ratelimit.proto",
        "envoy/service/ratelimit/v3/rls.proto",
        "llmgateway/usage/v1/usage.proto",
    ];
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
