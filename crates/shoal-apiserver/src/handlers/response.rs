//! Responses: JSON bodies, content negotiation, warnings, and the answer to a write.

use super::*;

/// A JSON body, ended with a newline as kube-apiserver's encoder ends every one.
pub(super) fn json_response(code: StatusCode, mut body: Vec<u8>) -> Response {
    body.push(b'\n');
    json_body(code, Body::from(body))
}

/// A response with a JSON body that is complete as given (newline included).
pub(super) fn json_body(code: StatusCode, body: Body) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn value_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

pub(super) fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

pub(super) fn wants_table(headers: &HeaderMap) -> bool {
    let a = accept(headers);
    a.split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

pub(super) fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(super) fn written(info: &ResourceInfo, mut w: Written) -> Response {
    crate::conversion::serve_value(info, &mut w.object);
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    with_warnings(value_response(code, &w.object), &w.warnings)
}
