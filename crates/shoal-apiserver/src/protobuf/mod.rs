//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's
//! typed generators (`create namespace|configmap|secret|deployment|...`) send with no JSON
//! fallback.
//!
//! A body is `k8s\0` followed by a `runtime.Unknown` holding the type (apiVersion, kind) and the
//! object's bytes. Those are decoded generically with [`schema::MESSAGES`], generated from the
//! `k8s-pb` message definitions (field numbers and wire types) and `k8s-openapi` (JSON names) by
//! `codegen/proto_schema.py`, into the same JSON the object would have been sent as.

mod schema;

use crate::error::ApiResult;
use base64::Engine;
use serde_json::{Map, Value, json};
use shoal_api::StatusError;

/// The type of a field.
#[derive(Debug)]
pub(crate) enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    /// A message, by its full name (`api.core.v1.PodSpec`).
    Message(&'static str),
    /// A map from strings to the given type.
    Map(&'static Ty),
}

#[derive(Debug)]
pub(crate) struct Field {
    pub num: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

const MAGIC: &[u8] = b"k8s\0";
/// Deeper nesting than any Kubernetes object has; bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;

fn bad(msg: impl std::fmt::Display) -> StatusError {
    StatusError::bad_request(format!("error decoding protobuf body: {msg}"))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, StatusError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(bad("varint too long"))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], StatusError> {
        if n > self.buf.len() {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn bytes(&mut self) -> Result<&'a [u8], StatusError> {
        let n = usize::try_from(self.varint()?).map_err(|_| bad("length overflow"))?;
        self.take(n)
    }
    /// Skips a field of wire type `wt`.
    fn skip(&mut self, wt: u64) -> Result<(), StatusError> {
        match wt {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            other => Err(bad(format!("unsupported wire type {other}"))),
        }
    }
}

/// A message's fields by its full name (one hash lookup; the canonical ordering of every
/// stored object asks for each nested message).
pub(crate) fn lookup(name: &str) -> Option<&'static [Field]> {
    static BY_NAME: std::sync::OnceLock<std::collections::HashMap<&'static str, &'static [Field]>> =
        std::sync::OnceLock::new();
    BY_NAME
        .get_or_init(|| schema::MESSAGES.iter().map(|(n, f)| (*n, *f)).collect())
        .get(name)
        .copied()
}

fn text(b: &[u8]) -> Result<String, StatusError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

/// Reads `{1: int64 seconds, 2: int32 nanos}` (meta/v1 Time and MicroTime).
fn timestamp(buf: &[u8], micro: bool) -> Result<Value, StatusError> {
    let mut r = Reader { buf };
    let (mut secs, mut nanos) = (0i64, 0i64);
    while !r.buf.is_empty() {
        let key = r.varint()?;
        match (key >> 3, key & 7) {
            (1, 0) => secs = r.varint()? as i64,
            (2, 0) => nanos = r.varint()? as i64,
            (_, wt) => r.skip(wt)?,
        }
    }
    if secs == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let ts = k8s_openapi::jiff::Timestamp::new(secs, nanos as i32).map_err(bad)?;
    let fmt = if micro {
        "%Y-%m-%dT%H:%M:%S.%6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(json!(ts.strftime(fmt).to_string()))
}

/// The bytes of field 1 of a message holding one length-delimited field.
fn single(buf: &[u8]) -> Result<Option<&[u8]>, StatusError> {
    let mut r = Reader { buf };
    let mut out = None;
    while !r.buf.is_empty() {
        let key = r.varint()?;
        if key >> 3 == 1 && key & 7 == 2 {
            out = Some(r.bytes()?);
        } else {
            r.skip(key & 7)?;
        }
    }
    Ok(out)
}

/// Messages whose JSON form is not an object of their fields.
fn special(name: &str, buf: &[u8]) -> Result<Option<Value>, StatusError> {
    Ok(Some(match name {
        "apimachinery.pkg.apis.meta.v1.Time" => timestamp(buf, false)?,
        "apimachinery.pkg.apis.meta.v1.MicroTime" => timestamp(buf, true)?,
        "apimachinery.pkg.api.resource.Quantity" => single(buf)?
            .map(text)
            .transpose()?
            .map_or(Value::Null, Value::String),
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            match single(buf)? {
                Some(raw) if !raw.is_empty() => serde_json::from_slice(raw)
                    .map_err(|e| bad(format!("{name} is not JSON: {e}")))?,
                _ => Value::Null,
            }
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let mut r = Reader { buf };
            let (mut ty, mut int, mut s) = (0u64, 0i64, String::new());
            while !r.buf.is_empty() {
                let key = r.varint()?;
                match (key >> 3, key & 7) {
                    (1, 0) => ty = r.varint()?,
                    (2, 0) => int = i64::from(r.varint()? as i32),
                    (3, 2) => s = text(r.bytes()?)?,
                    (_, wt) => r.skip(wt)?,
                }
            }
            if ty == 1 { json!(s) } else { json!(int) }
        }
        "apimachinery.pkg.apis.meta.v1.Duration" => {
            let mut r = Reader { buf };
            let mut ns = 0i64;
            while !r.buf.is_empty() {
                let key = r.varint()?;
                if key == 8 {
                    ns = r.varint()? as i64
                } else {
                    r.skip(key & 7)?
                }
            }
            json!(format!("{}s", ns as f64 / 1e9))
        }
        _ => return Ok(None),
    }))
}

fn scalar(ty: &Ty, wt: u64, r: &mut Reader<'_>, depth: usize) -> Result<Value, StatusError> {
    Ok(match (ty, wt) {
        (Ty::String, 2) => json!(text(r.bytes()?)?),
        (Ty::Bytes, 2) => json!(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
        (Ty::Bool, 0) => json!(r.varint()? != 0),
        (Ty::Int32, 0) => json!(r.varint()? as i32),
        (Ty::Int64, 0) => json!(r.varint()? as i64),
        (Ty::Message(name), 2) => message(name, r.bytes()?, depth + 1)?,
        (ty, wt) => return Err(bad(format!("wire type {wt} does not fit {ty:?}"))),
    })
}

/// Whether Go's JSON encoding would have left the field out (omitempty of a zero value).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Fields whose Go struct is embedded with `json:",inline"`: in protobuf they are a nested
/// message, in JSON their fields are the parent's own (`Volume.hostPath`, not
/// `Volume.volumeSource.hostPath`).
const INLINE: &[(&str, &str)] = &[
    ("api.core.v1.EphemeralContainer", "ephemeralContainerCommon"),
    ("api.core.v1.PersistentVolumeSpec", "persistentVolumeSource"),
    ("api.core.v1.Probe", "handler"),
    ("api.core.v1.Volume", "volumeSource"),
    ("api.networking.v1.IngressRule", "ingressRuleValue"),
];

fn message(name: &str, buf: &[u8], depth: usize) -> Result<Value, StatusError> {
    if depth > MAX_DEPTH {
        return Err(bad("nesting too deep"));
    }
    if let Some(v) = special(name, buf)? {
        return Ok(v);
    }
    let fields = lookup(name).ok_or_else(|| bad(format!("no schema for message {name}")))?;
    let mut out = Map::new();
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let Some(f) = fields.iter().find(|f| u64::from(f.num) == num) else {
            r.skip(wt)?;
            continue;
        };
        match &f.ty {
            Ty::Map(value_ty) => {
                let mut entry = Reader { buf: r.bytes()? };
                let (mut k, mut v) = (String::new(), Value::Null);
                while !entry.buf.is_empty() {
                    let ek = entry.varint()?;
                    match (ek >> 3, ek & 7) {
                        (1, 2) => k = text(entry.bytes()?)?,
                        (2, ewt) => v = scalar(value_ty, ewt, &mut entry, depth)?,
                        (_, ewt) => entry.skip(ewt)?,
                    }
                }
                if v.is_null() {
                    v = match value_ty {
                        Ty::String | Ty::Bytes => json!(""),
                        _ => json!({}),
                    };
                }
                let m = out.entry(f.json).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
            }
            ty if f.repeated => {
                let packed = wt == 2 && matches!(ty, Ty::Int32 | Ty::Int64 | Ty::Bool);
                let items = out.entry(f.json).or_insert_with(|| json!([]));
                let Some(items) = items.as_array_mut() else {
                    continue;
                };
                if packed {
                    let mut p = Reader { buf: r.bytes()? };
                    while !p.buf.is_empty() {
                        items.push(scalar(ty, 0, &mut p, depth)?);
                    }
                } else {
                    items.push(scalar(ty, wt, &mut r, depth)?);
                }
            }
            ty => {
                let v = scalar(ty, wt, &mut r, depth)?;
                match v {
                    Value::Object(inner) if INLINE.contains(&(name, f.json)) => out.extend(inner),
                    v => {
                        out.insert(f.json.to_owned(), v);
                    }
                }
            }
        }
    }
    out.retain(|_, v| !is_zero(v));
    Ok(Value::Object(out))
}

/// The protobuf package of an API group version (`apps/v1` → `api.apps.v1`).
pub(crate) fn package(api_version: &str) -> String {
    match api_version.split_once('/') {
        None => format!("api.core.{api_version}"),
        Some((group, version)) => {
            format!("api.{}.{version}", group.split('.').next().unwrap_or(group))
        }
    }
}

/// Decodes a Kubernetes protobuf body into the object's JSON form.
pub fn decode(bytes: &[u8]) -> ApiResult<Value> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s protobuf prefix"))?;
    let mut r = Reader { buf: body };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !r.buf.is_empty() {
        let key = r.varint()?;
        match (key >> 3, key & 7) {
            (1, 2) => {
                let mut tm = Reader { buf: r.bytes()? };
                while !tm.buf.is_empty() {
                    let k = tm.varint()?;
                    match (k >> 3, k & 7) {
                        (1, 2) => api_version = text(tm.bytes()?)?,
                        (2, 2) => kind = text(tm.bytes()?)?,
                        (_, wt) => tm.skip(wt)?,
                    }
                }
            }
            (2, 2) => raw = r.bytes()?,
            (_, wt) => r.skip(wt)?,
        }
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(bad("the body names no apiVersion and kind").into());
    }
    let mut obj = message(&format!("{}.{kind}", package(&api_version)), raw, 0)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn schema_is_sorted_for_binary_search() {
        assert!(schema::MESSAGES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(lookup("api.apps.v1.Deployment").is_some());
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [
            field(1, b"c1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"a"), field(2, b"1")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let mut body = b"k8s\0".to_vec();
        body.extend([field(1, &type_meta), field(2, &cm)].concat());
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "1"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn inline_structs_are_the_parents_fields_as_in_json() {
        // Volume{name: "root", volumeSource: {hostPath: {path: "/"}}}
        let host_path = field(1, b"/");
        let source = field(1, &host_path);
        let volume = [field(1, b"root"), field(2, &source)].concat();
        assert_eq!(
            message("api.core.v1.Volume", &volume, 0).unwrap(),
            json!({"name": "root", "hostPath": {"path": "/"}})
        );
        for (msg, json) in INLINE {
            let fields = lookup(msg).unwrap_or_else(|| panic!("no {msg}"));
            assert!(fields.iter().any(|f| f.json == *json), "{msg}.{json}");
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_crash() {
        assert!(decode(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        assert!(decode(b"not protobuf").is_err());
        let mut deep = b"k8s\0".to_vec();
        deep.extend([0x12, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x0a]);
        let _ = decode(&deep);
    }
}
