//! Fuzz targets for what the API server decodes from the outside: bearer tokens (bootstrap
//! tokens and ServiceAccount JWTs), client certificates' and certificate requests' subjects,
//! the static token file, the audit policy (and the admission configuration), the encryption
//! configuration, request bodies
//! (JSON, YAML, protobuf), label and field selectors, quantities and the three patch types.
//! None of them may panic, whatever the bytes.
//!
//! They run on the stable toolchain with bolero: under `cargo test` (so in `cargo xtask test`)
//! each replays its corpus (`src/__fuzz__/fuzz::NAME/corpus/`, kept in the repository) and then
//! generates inputs for one second (`BOLERO_RANDOM_TEST_TIME_MS` changes that);
//! `cargo bolero test fuzz::NAME` with a nightly toolchain fuzzes one with libFuzzer.

use serde_json::json;

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

/// Random bytes rarely look like a selector or a patch: each byte also picks one of `pieces`,
/// so the same input is tried as a sentence of the format's own words.
fn compose(bytes: &[u8], pieces: &[&str]) -> String {
    bytes
        .iter()
        .map(|b| pieces[usize::from(*b) % pieces.len()])
        .collect()
}

const SELECTOR_WORDS: &[&str] = &[
    "a",
    "b",
    "x.io/k",
    "=",
    "==",
    "!=",
    "!",
    ",",
    " in ",
    " notin ",
    "(",
    ")",
    " ",
    "1",
    "-",
    "metadata.name",
    "spec.nodeName",
    "status.phase",
    "Gi",
    "Mi",
    "m",
    "k",
    "e3",
    ".",
    "+",
];

const JSON_WORDS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"op\"",
    "\"add\"",
    "\"remove\"",
    "\"replace\"",
    "\"move\"",
    "\"copy\"",
    "\"test\"",
    "\"path\"",
    "\"from\"",
    "\"value\"",
    "\"/spec/replicas\"",
    "\"/metadata/labels/a\"",
    "\"/spec/template/spec/containers/0\"",
    "\"/-\"",
    "1",
    "-1",
    "null",
    "true",
    "\"x\"",
    "\"spec\"",
    "\"metadata\"",
    "\"labels\"",
    "\"containers\"",
    "\"name\"",
    "\"c\"",
    "\"$patch\"",
    "\"delete\"",
    "\"replace\"",
    "\"$retainKeys\"",
    "\"$setElementOrder/containers\"",
    "\"$deleteFromPrimitiveList/args\"",
    "\"env\"",
    "\"template\"",
];

const YAML_WORDS: &[&str] = &[
    "\n",
    "  ",
    "- ",
    ": ",
    "apiVersion",
    "kind",
    "Policy",
    "EncryptionConfiguration",
    "audit.k8s.io/v1",
    "apiserver.config.k8s.io/v1",
    "rules",
    "level",
    "None",
    "Metadata",
    "Request",
    "RequestResponse",
    "resources",
    "group",
    "verbs",
    "users",
    "userGroups",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "RequestReceived",
    "providers",
    "aesgcm",
    "aescbc",
    "secretbox",
    "identity",
    "keys",
    "name",
    "secret",
    "secrets",
    "MDEyMzQ1Njc4OTAxMjM0NQ==",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"\"",
    "*",
    "/healthz*",
    "get",
];

#[test]
fn tokens() {
    let issuer = crate::serviceaccount::TokenIssuer::ephemeral();
    bolero::check!().for_each(|bytes: &[u8]| {
        let token = text(bytes);
        let _ = crate::bootstraptoken::parse(token);
        let _ = crate::bootstraptoken::expired(token);
        if crate::serviceaccount::looks_like_jwt(token) {
            let _ = issuer.verify(token);
        }
        let _ = crate::auth::same_token(token, "0123456789abcdef");
    });
}

#[test]
fn certificates() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let _ = crate::auth::user_of_certificate(bytes);
        let _ = shoal_pki::parse_request(bytes);
        let _ = shoal_pki::validity(bytes);
    });
}

#[test]
fn token_file() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let _ = crate::auth::parse_token_file(text(bytes));
        let _ =
            crate::auth::parse_token_file(&compose(bytes, &["t", ",", "\"", "\n", "#", "a", " "]));
    });
}

#[test]
fn audit_policy() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let _ = crate::audit::Policy::parse(text(bytes));
        let _ = crate::audit::Policy::parse(&compose(bytes, YAML_WORDS));
        // The admission configuration (Pod Security's defaults and exemptions) too.
        let _ = crate::admission::podsecurity::Config::parse(text(bytes));
        let _ = crate::admission::podsecurity::Config::parse(&compose(bytes, YAML_WORDS));
    });
}

#[test]
fn encryption_config() {
    bolero::check!().for_each(|bytes: &[u8]| {
        let _ = crate::encryption::EncryptionConfig::parse(text(bytes));
        let _ = crate::encryption::EncryptionConfig::parse(&compose(bytes, YAML_WORDS));
    });
}

#[test]
fn bodies() {
    bolero::check!().for_each(|bytes: &[u8]| {
        for ct in [
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ] {
            let _ = crate::body::decode_object(ct, bytes);
            let _ = crate::body::decode_as("Pod", ct, bytes);
        }
        let _ = crate::protobuf::decode(bytes);
        let json = compose(bytes, JSON_WORDS);
        let _ = crate::body::decode_object("application/json", json.as_bytes());
        let _ = crate::body::decode_as("Pod", "application/json", json.as_bytes());
    });
}

#[test]
fn selectors_and_quantities() {
    bolero::check!().for_each(|bytes: &[u8]| {
        for s in [text(bytes), &compose(bytes, SELECTOR_WORDS)] {
            let _ = shoal_api::selector::LabelSelector::parse(s);
            let _ = shoal_api::selector::FieldSelector::parse(s);
            let _ = shoal_api::quantity::parse(s);
        }
    });
}

#[test]
fn patches() {
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "b"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "c", "image": "i", "env": [{"name": "X", "value": "1"}]}]}}}});
    bolero::check!().for_each(|bytes: &[u8]| {
        let json = compose(bytes, JSON_WORDS);
        for patch in [bytes, json.as_bytes()] {
            let _ = crate::patch::json_patch(&mut target.clone(), patch);
            let _ = crate::patch::merge_patch(&mut target.clone(), patch);
            let _ = crate::patch::strategic_merge_patch(&mut target.clone(), patch);
        }
    });
}
