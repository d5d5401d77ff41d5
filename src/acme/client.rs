//! instant-acme's HTTP client, on our stack: hyper's HTTP/1.1 client over a smol TCP stream
//! and futures-rustls, one connection per request (ACME exchanges are a handful an hour), each
//! bounded in time and in the size of the response it reads.

use futures_rustls::TlsConnector;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use smol::net::TcpStream;
use smol_hyper::rt::FuturesIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A whole request: connect, TLS, send, read the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response read (a certificate chain is a few KiB; a directory less).
const MAX_RESPONSE: usize = 1024 * 1024;

pub struct SmolHttp {
    tls: Arc<ClientConfig>,
}

impl SmolHttp {
    /// The system's trust store (rustls-platform-verifier, which honours `SSL_CERT_FILE`:
    /// the tests point it at their ACME server's CA).
    pub fn new() -> Result<SmolHttp, rustls::Error> {
        use rustls_platform_verifier::BuilderVerifierExt;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        Ok(SmolHttp {
            tls: Arc::new(config),
        })
    }
}

fn other(msg: String) -> Error {
    Error::Other(msg.into())
}

impl HttpClient for SmolHttp {
    fn request(
        &self,
        req: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let timeout = async {
                smol::Timer::after(REQUEST_TIMEOUT).await;
                Err(other(format!(
                    "no answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            };
            smol::future::or(exchange(tls, req), timeout).await
        })
    }
}

async fn exchange(
    tls: Arc<ClientConfig>,
    req: hyper::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Error> {
    let uri = req.uri().clone();
    // RFC 8555 §6.1: ACME runs over HTTPS only.
    if uri.scheme_str() != Some("https") {
        return Err(other(format!("{uri}: not an https URL")));
    }
    let host = uri.host().ok_or_else(|| other(format!("{uri}: no host")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| other(format!("{host}:{port}: {e}")))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| other(format!("{host}: {e}")))?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("{host}:{port}: TLS: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| other(format!("{host}:{port}: {e}")))?;
    let (mut parts, body) = req.into_parts();
    // hyper's connection-level client sends the URI as given: make it origin-form with Host.
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or(host.clone());
    parts.headers.insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_str(&authority)
            .map_err(|e| other(format!("{authority}: {e}")))?,
    );
    parts.uri = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e| other(format!("{uri}: {e}")))?;
    let request = hyper::Request::from_parts(parts, body);
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| other(format!("{uri}: {e}")))?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| other(format!("{uri}: reading the response: {e}")))?
            .to_bytes();
        Ok(BytesResponse::from(hyper::Response::from_parts(
            parts,
            Full::new(bytes),
        )))
    };
    // The connection must be polled for the exchange to progress.
    let drive = async {
        if let Err(e) = conn.await {
            return Err(other(format!("{uri}: {e}")));
        }
        std::future::pending().await
    };
    smol::future::or(exchange, drive).await
}
