//! The one call Kestrel makes to a Kubernetes CRI runtime (containerd):
//! `runtime.v1.RuntimeService/ContainerStatus`, over gRPC on a unix socket.
//!
//! The messages are the subset of k8s.io/cri-api's runtime/v1/api.proto
//! that carries names, with the proto's own field numbers; fields not
//! declared here are skipped by the decoder.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;

/// `ContainerStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusRequest {
    /// Container id.
    #[prost(string, tag = "1")]
    pub container_id: String,
    /// Ask for runtime-specific details (not wanted).
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ContainerStatusResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatusResponse {
    /// The container's status.
    #[prost(message, optional, tag = "1")]
    pub status: Option<ContainerStatus>,
}

/// `ContainerStatus`, the fields Kestrel reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerStatus {
    /// Container id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Name and attempt.
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<ContainerMetadata>,
    /// The image as requested.
    #[prost(message, optional, tag = "8")]
    pub image: Option<ImageSpec>,
    /// The image's resolved reference.
    #[prost(string, tag = "9")]
    pub image_ref: String,
    /// Labels, with the pod's name and namespace.
    #[prost(map = "string, string", tag = "12")]
    pub labels: HashMap<String, String>,
}

/// `ContainerMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    /// Container name in its pod.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Restart count.
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    /// Image reference.
    #[prost(string, tag = "1")]
    pub image: String,
}

/// The gRPC method path.
pub const CONTAINER_STATUS: &str = "/runtime.v1.RuntimeService/ContainerStatus";

/// What a lookup gave.
pub enum Answer {
    /// The runtime knows the container.
    Found(ContainerStatus),
    /// The runtime answered that it does not.
    NotFound,
}

/// Asks the CRI runtime at `socket` for container `id`, within `timeout`.
/// `rt` is the worker thread's own single-threaded runtime.
pub fn container_status(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    id: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let socket = socket.to_path_buf();
    let request = ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    };
    rt.block_on(async move {
        let call = async {
            // The URI is required by the API but unused: the connector
            // below always dials the unix socket.
            let channel = tonic::transport::Endpoint::from_static("http://cri.invalid")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        tokio::net::UnixStream::connect(socket)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    }
                }))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
            let codec =
                tonic_prost::ProstCodec::<ContainerStatusRequest, ContainerStatusResponse>::default(
                );
            match grpc
                .unary(
                    tonic::Request::new(request),
                    PathAndQuery::from_static(CONTAINER_STATUS),
                    codec,
                )
                .await
            {
                Ok(r) => Ok(match r.into_inner().status {
                    Some(s) => Answer::Found(s),
                    None => Answer::NotFound,
                }),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(Answer::NotFound),
                Err(s) => Err(format!("ContainerStatus: {s}")),
            }
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()))
    })
}
