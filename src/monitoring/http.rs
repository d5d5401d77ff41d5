//! Requests → responses for the monitoring endpoint: `/metrics`, `/healthz`, `/queue`. The
//! routing is a pure function; only the queue listing touches the disk (read-only, off the
//! executor).

use crate::message::now_secs;
use crate::metrics::{self, QueueStats};
use crate::queue::listing::{self, Listed};
use crate::queue::store::Queue;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode, header};

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT_TYPE: &str = "text/plain; charset=utf-8";
const JSON_TYPE: &str = "application/json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Healthz,
    Queue,
    /// A known path with a method other than GET or HEAD.
    MethodNotAllowed,
    NotFound,
}

/// Where a request goes (the path without its query string).
pub fn route(method: &Method, path: &str) -> Route {
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        "/queue" => Route::Queue,
        _ => return Route::NotFound,
    };
    if method == Method::GET || method == Method::HEAD {
        route
    } else {
        Route::MethodNotAllowed
    }
}

/// Answers one request; failures become a 500 whose reason goes to the log only.
pub async fn respond(method: &Method, path: &str, queue: &Queue) -> Response<Full<Bytes>> {
    match route(method, path) {
        Route::Metrics => match scan(queue).await {
            Ok(listed) => {
                let (messages, oldest_age_secs) = listing::summary(&listed);
                let stats = QueueStats {
                    messages,
                    oldest_age_secs,
                };
                reply(
                    StatusCode::OK,
                    METRICS_TYPE,
                    metrics::global().render(&stats),
                )
            }
            Err(e) => internal_error(&e),
        },
        Route::Healthz => reply(StatusCode::OK, TEXT_TYPE, "ok".into()),
        Route::Queue => match scan(queue).await.and_then(to_json) {
            Ok(json) => reply(StatusCode::OK, JSON_TYPE, json),
            Err(e) => internal_error(&e),
        },
        Route::MethodNotAllowed => {
            let mut r = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT_TYPE,
                "method not allowed\n".into(),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            r
        }
        Route::NotFound => reply(StatusCode::NOT_FOUND, TEXT_TYPE, "not found\n".into()),
    }
}

/// The queue as `util queue` lists it, read on a blocking thread.
async fn scan(queue: &Queue) -> std::io::Result<Vec<Listed>> {
    let queue = queue.clone();
    smol::unblock(move || listing::list(&queue, now_secs())).await
}

fn to_json(listed: Vec<Listed>) -> std::io::Result<String> {
    let mut json = serde_json::to_string_pretty(&listed).map_err(std::io::Error::other)?;
    json.push('\n');
    Ok(json)
}

fn internal_error(e: &std::io::Error) -> Response<Full<Bytes>> {
    log::error!("monitoring: cannot read the queue: {e}");
    reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        TEXT_TYPE,
        "internal error\n".into(),
    )
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn routes() {
        let cases = [
            (Method::GET, "/metrics", Route::Metrics),
            (Method::HEAD, "/metrics", Route::Metrics),
            (Method::GET, "/healthz", Route::Healthz),
            (Method::GET, "/queue", Route::Queue),
            (Method::POST, "/queue", Route::MethodNotAllowed),
            (Method::DELETE, "/metrics", Route::MethodNotAllowed),
            (Method::GET, "/", Route::NotFound),
            (Method::GET, "/metrics/", Route::NotFound),
            (Method::GET, "/queue/../metrics", Route::NotFound),
            (Method::POST, "/nope", Route::NotFound),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(&method, path), want, "{method} {path}");
        }
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn responses_on_an_empty_queue() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        smol::block_on(async {
            let r = respond(&Method::GET, "/healthz", &queue).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(body(r).await, "ok");

            let r = respond(&Method::GET, "/metrics", &queue).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], METRICS_TYPE);
            let text = body(r).await;
            assert!(text.contains("\ntambo_queue_messages 0\n"), "{text}");

            let r = respond(&Method::GET, "/queue", &queue).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], JSON_TYPE);
            assert_eq!(body(r).await, "[]\n");

            let r = respond(&Method::GET, "/other", &queue).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            let r = respond(&Method::PUT, "/healthz", &queue).await;
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        });
    }

    #[test]
    fn a_missing_queue_folder_is_a_500() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).unwrap();
        std::fs::remove_dir_all(dir.path().join("queue")).unwrap();
        smol::block_on(async {
            let r = respond(&Method::GET, "/queue", &queue).await;
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body(r).await, "internal error\n");
        });
    }
}
