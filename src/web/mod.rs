//! The web endpoints of SPEC §12. `http_listen`: ACME http-01 answers, a redirect to https for
//! anything else. `https_listen`, by host name: the MTA-STS policy, Thunderbird's
//! autoconfiguration, Outlook's autodiscover; and ACME tls-alpn-01 (in the TLS handshake,
//! `tls`). Served with hyper, each connection bounded by `net::http` (header size and time,
//! lifetime, a cap on open connections), request bodies read up to [`MAX_BODY`].
//!
//! - [`routes`]: where a request goes and what it gets (pure).
//! - [`autoconfig`]: the Thunderbird and Outlook documents.
//! - [`mta_sts`]: the policy text, shared with `util dns-records`.

pub mod autoconfig;
pub mod mta_sts;
pub mod routes;

use crate::config::live_config::LiveConfig;
use crate::net::http::Slots;
use autoconfig::MailPorts;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use routes::{Reply, Site};
use smol::Async;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once per listener kind; more are closed as soon as accepted.
const MAX_CONNECTIONS: usize = 128;
/// A request body (autodiscover's POST is a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;
/// Time to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Binds `http_listen` and `https_listen` and serves them on `ex` until the process ends.
pub fn start(config: &Arc<LiveConfig>, ex: &Arc<smol::Executor<'static>>) -> Result<(), String> {
    let settings = &config.settings;
    let ports = MailPorts::from_settings(settings);
    for (key, addrs, scheme) in [
        ("http_listen", &settings.http_listen, Scheme::Http),
        ("https_listen", &settings.https_listen, Scheme::Https),
    ] {
        let slots = Slots::new(MAX_CONNECTIONS);
        for addr in addrs {
            let listener =
                Async::<TcpListener>::bind(*addr).map_err(|e| format!("{key} {addr}: {e}"))?;
            let url = if scheme == Scheme::Http {
                "http"
            } else {
                "https"
            };
            log::info!("web: listening on {url}://{addr}/");
            let task = accept_loop(
                listener,
                scheme,
                ports,
                config.clone(),
                slots.clone(),
                ex.clone(),
            );
            ex.spawn(task).detach();
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: Async<TcpListener>,
    scheme: Scheme,
    ports: MailPorts,
    config: Arc<LiveConfig>,
    slots: Arc<Slots>,
    ex: Arc<smol::Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    log::warn!("web: too many connections, closing {peer}");
                    continue;
                };
                let config = config.clone();
                ex.spawn(async move {
                    connection(stream, peer, scheme, ports, config).await;
                    drop(slot);
                })
                .detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::error!("web: accept: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    scheme: Scheme,
    ports: MailPorts,
    config: Arc<LiveConfig>,
) {
    let service_config = config.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let config = service_config.clone();
        async move { Ok::<_, std::convert::Infallible>(respond(req, scheme, ports, &config).await) }
    });
    let served = match scheme {
        Scheme::Http => crate::net::http::serve(stream, service).await,
        Scheme::Https => {
            let acceptor = config.web_tls();
            let handshake = async { Some(acceptor.accept(stream).await) };
            let timeout = async {
                smol::Timer::after(HANDSHAKE_TIMEOUT).await;
                None
            };
            match smol::future::or(handshake, timeout).await {
                Some(Ok(tls)) => crate::net::http::serve(tls, service).await,
                Some(Err(e)) => {
                    log::debug!(
                        "web: TLS from {peer}: {}",
                        crate::tls::handshake_failure(&e)
                    );
                    return;
                }
                None => return,
            }
        }
    };
    if let Err(e) = served {
        log::debug!("web: connection from {peer}: {e}");
    }
}

/// The site as the configuration in force describes it.
fn site(config: &LiveConfig, ports: MailPorts) -> Site {
    let settings = &config.settings;
    Site {
        hostname: idna::domain_to_ascii(&settings.hostname)
            .unwrap_or_else(|_| settings.hostname.clone()),
        domains: config.domains().iter().map(|(d, _)| d.to_ascii()).collect(),
        mta_sts_mode: mta_sts::mode(settings),
        ports,
    }
}

async fn respond(
    req: Request<Incoming>,
    scheme: Scheme,
    ports: MailPorts,
    config: &LiveConfig,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // HTTP/1.1 (RFC 9112 §3.2) sends Host; the URI carries it in absolute form.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.host())
        .unwrap_or("")
        .to_string();
    let path = parts.uri.path();
    let reply = match scheme {
        Scheme::Http => routes::http(&config.challenges(), &parts.method, &host, path),
        Scheme::Https => {
            let body = match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
            };
            let body = String::from_utf8_lossy(&body);
            let query = parts.uri.query().unwrap_or("");
            site(config, ports).https(&parts.method, &host, path, query, &body)
        }
    };
    match reply {
        Reply::Ok { content_type, body } => Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "")),
        Reply::Redirect(url) => Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, url)
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| status(StatusCode::BAD_REQUEST, "")),
        Reply::MethodNotAllowed => status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        Reply::NotFound => status(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response
}
