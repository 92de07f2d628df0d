//! `tansu`, as tansu 0.6.0's src/bin/tansu.rs runs it (less its friendlier
//! messages for client commands), for the Kafka tests: see Cargo.toml.

use tansu_broker::{otel, TracingFormat};
use tansu_cli::{Cli, Result};
use tansu_sans_io::ErrorCode;

#[tokio::main]
async fn main() -> Result<ErrorCode> {
    let _guard = otel::init(TracingFormat::Text)?;
    Cli::main().await
}
