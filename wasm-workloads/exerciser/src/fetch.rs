//! One `wasi:http` GET through the host's outgoing handler.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingBody, OutgoingBody, OutgoingRequest, Scheme};

/// The status code and body of `GET url` (`http[s]://host[:port]/path`), with
/// `Authorization: Bearer TOKEN` when given a token.
pub fn get(url: &str, bearer: Option<&str>) -> Result<(u16, String), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err("only http:// and https:// URLs are supported".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some(token) = bearer {
        headers
            .append(
                "authorization",
                format!("Bearer {}", token.trim()).as_bytes(),
            )
            .map_err(|e| format!("bad token: {e:?}"))?;
    }
    let req = OutgoingRequest::new(headers);
    req.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    req.set_authority(Some(authority))
        .map_err(|()| format!("bad authority {authority:?}"))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| format!("bad path {path:?}"))?;
    let body = req.body().map_err(|()| "no request body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let incoming = resp.consume().map_err(|()| "no response body")?;
    let stream = incoming.stream().map_err(|()| "no body stream")?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the body: {e:?}")),
        }
    }
    drop(stream);
    let _ = IncomingBody::finish(incoming);
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}
