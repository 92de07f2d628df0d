//! A small HTTPS client for the server's API (used by `kestrel ctl` and the
//! bench): one TLS connection per request, the server checked against the
//! CA, the admin token as a bearer token.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// A client for one server.
pub struct ApiClient {
    addr: String,
    host: String,
    tls: tokio_rustls::TlsConnector,
    token: String,
}

impl ApiClient {
    /// `url` is `https://HOST:PORT`; `ca_pem` the server's CA.
    pub fn new(url: &str, ca_pem: &[u8], token: String) -> Result<ApiClient> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("--api {url:?}: must start with https://"))?;
        let addr = rest.trim_end_matches('/').to_string();
        let host = kestrel_control::client::server_host(&addr)
            .ok_or_else(|| anyhow!("--api {url:?}: must be https://HOST:PORT"))?;
        Ok(ApiClient {
            addr,
            host,
            tls: tokio_rustls::TlsConnector::from(crate::tls::rustls_client(ca_pem)?),
            token,
        })
    }

    /// Sends a request; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("cannot connect to {}", self.addr))?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| anyhow!("bad server name {}: {e}", self.host))?;
        let tls = match self.tls.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => {
                let bad_cert = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .filter(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                if let Some(r) = bad_cert {
                    bail!("{}: the server's certificate did not verify against the CA file (--ca-file): {r}", self.addr);
                }
                return Err(e).with_context(|| format!("TLS with {}", self.addr));
            }
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(data)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{method} {path}: answer is not JSON"))?
        };
        Ok((status, v))
    }

    /// Like `call`, but a non-2xx answer is an error with the server's
    /// message.
    pub async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (s, v) = self.call(method, path, body).await?;
        if !(200..300).contains(&s) {
            let msg = v.get("error").and_then(Value::as_str).unwrap_or("");
            bail!("{method} {path}: HTTP {s}: {msg}");
        }
        Ok(v)
    }
}

/// Reads a token file.
pub fn read_token(path: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}

/// Shared by the clients.
pub type Shared = Arc<ApiClient>;
