//! `frontend`: a `wasi:http` server that answers each request by calling the URL in its
//! `BACKEND` environment variable (with the request's path appended) and returning what it
//! got, prefixed by the status line `backend: CODE`. A sample of one pod calling another.

use wstd::http::{Body, Client, Request, Response, StatusCode};

#[wstd::http_server]
async fn main(req: Request<Body>) -> Result<Response<Body>, wstd::http::Error> {
    let Ok(backend) = std::env::var("BACKEND") else {
        return Ok(Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from("BACKEND is not set\n"))?);
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path}", backend.trim_end_matches('/'));
    let call = Request::builder().uri(url.as_str()).body(Body::empty())?;
    match Client::new().send(call).await {
        Ok(mut resp) => {
            let code = resp.status().as_u16();
            let body = resp.body_mut().str_contents().await?.to_owned();
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Body::from(format!("backend: {code}\n{body}")))?)
        }
        Err(e) => Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("calling {url}: {e}\n")))?),
    }
}
