//! Structural schemas: the OpenAPI v3 subset a CustomResourceDefinition version declares
//! (`openAPIV3Schema`), compiled once when the definition is accepted, then used on every write
//! of its objects in kube-apiextensions' order: unknown fields pruned, defaults applied, values
//! validated, every error naming its field as Kubernetes does (`spec.replicas in body should be
//! less than or equal to 10`).

use serde_json::{Map, Value};
use shoal_api::Cause;
use std::collections::BTreeMap;

/// Deeper than any real schema; bounds recursion on hostile definitions.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "object" => Ty::Object,
            "array" => Ty::Array,
            "string" => Ty::String,
            "integer" => Ty::Integer,
            "number" => Ty::Number,
            "boolean" => Ty::Boolean,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Ty::Object => "object",
            Ty::Array => "array",
            Ty::String => "string",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::Boolean => "boolean",
        }
    }
}

/// What `additionalProperties` allows.
#[derive(Debug, Clone, Default)]
enum Additional {
    /// Not given: only the declared properties.
    #[default]
    Unset,
    /// `true`: any value.
    Any,
    Schema(Box<Schema>),
}

/// One compiled schema node.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    ty: Option<Ty>,
    format: Option<String>,
    nullable: bool,
    enumeration: Vec<Value>,
    pattern: Option<(String, regex::Regex)>,
    maximum: Option<f64>,
    exclusive_maximum: bool,
    minimum: Option<f64>,
    exclusive_minimum: bool,
    multiple_of: Option<f64>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    unique_items: bool,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    required: Vec<String>,
    properties: BTreeMap<String, Schema>,
    additional: Additional,
    items: Option<Box<Schema>>,
    all_of: Vec<Schema>,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    default: Option<Value>,
    preserve_unknown: bool,
    int_or_string: bool,
    embedded: bool,
    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`) and its map keys.
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
}

/// Where in the definition a schema node sits, for errors about the schema itself.
struct Site<'a> {
    path: String,
    /// Value validation (`allOf`, `anyOf`, `oneOf`, `not`) may leave out types.
    in_value_validation: bool,
    errors: &'a mut Vec<Cause>,
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}
fn count(m: &Map<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}
fn flag(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "pattern",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "multipleOf",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "default",
    "example",
    "externalDocs",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

impl Schema {
    /// Compiles the `openAPIV3Schema` at `path`, adding to `errors` whatever makes it
    /// non-structural or unusable (Kubernetes refuses such a definition).
    pub fn compile(v: &Value, path: &str, errors: &mut Vec<Cause>) -> Schema {
        let mut site = Site {
            path: path.to_owned(),
            in_value_validation: false,
            errors,
        };
        let s = Schema::parse(v, &mut site, 0);
        if s.ty != Some(Ty::Object) {
            site.errors.push(Cause::invalid(
                format!("{path}.type"),
                s.ty.map_or("", Ty::name),
                "must be object at the root",
            ));
        }
        s
    }

    fn parse(v: &Value, site: &mut Site<'_>, depth: usize) -> Schema {
        let mut s = Schema::default();
        let Some(m) = v.as_object() else {
            site.errors.push(Cause::invalid(
                site.path.clone(),
                v,
                "must be a schema object",
            ));
            return s;
        };
        if depth > MAX_DEPTH {
            site.errors.push(Cause::forbidden(
                site.path.clone(),
                format!("schemas may not be nested deeper than {MAX_DEPTH}"),
            ));
            return s;
        }
        let path = site.path.clone();
        if m.contains_key("$ref") {
            site.errors.push(Cause::forbidden(
                format!("{path}.$ref"),
                "$ref is not supported",
            ));
        }
        for k in m.keys() {
            if !KNOWN_KEYWORDS.contains(&k.as_str()) && k != "$ref" && k != "$schema" && k != "id" {
                site.errors.push(Cause::forbidden(
                    format!("{path}.{k}"),
                    format!("{k} is not supported"),
                ));
            }
        }
        match m.get("type").and_then(Value::as_str) {
            Some("") | None => {}
            Some(t) => match Ty::parse(t) {
                Some(ty) => s.ty = Some(ty),
                None => site.errors.push(Cause::not_supported(
                    format!("{path}.type"),
                    t,
                    &["array", "boolean", "integer", "number", "object", "string"],
                )),
            },
        }
        s.format = m.get("format").and_then(Value::as_str).map(str::to_owned);
        s.nullable = flag(m, "nullable");
        s.enumeration = m
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(p) {
                Ok(re) => s.pattern = Some((p.to_owned(), re)),
                Err(e) => site.errors.push(Cause::invalid(
                    format!("{path}.pattern"),
                    p,
                    &format!("must be a valid regular expression, but isn't: {e}"),
                )),
            }
        }
        s.maximum = num(m, "maximum");
        s.exclusive_maximum = flag(m, "exclusiveMaximum");
        s.minimum = num(m, "minimum");
        s.exclusive_minimum = flag(m, "exclusiveMinimum");
        s.multiple_of = num(m, "multipleOf");
        s.max_length = count(m, "maxLength");
        s.min_length = count(m, "minLength");
        s.max_items = count(m, "maxItems");
        s.min_items = count(m, "minItems");
        s.unique_items = flag(m, "uniqueItems");
        s.max_properties = count(m, "maxProperties");
        s.min_properties = count(m, "minProperties");
        s.required = crate::meta::strings(m.get("required"));
        s.default = m.get("default").cloned();
        s.preserve_unknown = flag(m, "x-kubernetes-preserve-unknown-fields");
        s.int_or_string = flag(m, "x-kubernetes-int-or-string");
        s.embedded = flag(m, "x-kubernetes-embedded-resource");
        s.list_type = m
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        s.list_map_keys = crate::meta::strings(m.get("x-kubernetes-list-map-keys"));
        if s.list_type.as_deref() == Some("map") && s.list_map_keys.is_empty() {
            site.errors.push(Cause::required(format!(
                "{path}.x-kubernetes-list-map-keys"
            )));
        }
        // Structural: every specified field has a type, unless it is int-or-string or keeps
        // unknown fields (then anything goes).
        if s.ty.is_none() && !site.in_value_validation && !s.int_or_string && !s.preserve_unknown {
            site.errors.push(
                Cause::required(format!("{path}.type"))
                    .with_message("Required value: must not be empty for specified object fields"),
            );
        }
        if s.int_or_string && s.ty.is_some() {
            site.errors.push(Cause::forbidden(
                format!("{path}.type"),
                "must be empty if x-kubernetes-int-or-string is true",
            ));
        }
        if s.embedded && s.ty != Some(Ty::Object) {
            site.errors.push(Cause::invalid(
                format!("{path}.type"),
                s.ty.map_or("", Ty::name),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
        let child = |site: &mut Site<'_>, v: &Value, sub: String, value_validation: bool| {
            let saved = (site.path.clone(), site.in_value_validation);
            site.path = sub;
            site.in_value_validation |= value_validation;
            let s = Schema::parse(v, site, depth + 1);
            site.path = saved.0;
            site.in_value_validation = saved.1;
            s
        };
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let sub = child(site, v, format!("{path}.properties[{k}]"), false);
                s.properties.insert(k.clone(), sub);
            }
        }
        match m.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => s.additional = Additional::Any,
            Some(v) => {
                let sub = child(site, v, format!("{path}.additionalProperties"), false);
                s.additional = Additional::Schema(Box::new(sub));
            }
        }
        if !s.properties.is_empty() && !matches!(s.additional, Additional::Unset) {
            site.errors.push(Cause::forbidden(
                format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        match m.get("items") {
            None => {
                if s.ty == Some(Ty::Array) && !site.in_value_validation {
                    site.errors.push(
                        Cause::required(format!("{path}.items"))
                            .with_message("Required value: must be specified"),
                    );
                }
            }
            Some(Value::Array(_)) => site.errors.push(Cause::forbidden(
                format!("{path}.items"),
                "items must be a schema object and not an array",
            )),
            Some(v) => {
                let sub = child(site, v, format!("{path}.items"), false);
                s.items = Some(Box::new(sub));
            }
        }
        for (key, out) in [
            ("allOf", &mut s.all_of),
            ("anyOf", &mut s.any_of),
            ("oneOf", &mut s.one_of),
        ] {
            if let Some(list) = m.get(key).and_then(Value::as_array) {
                for (i, v) in list.iter().enumerate() {
                    out.push(child(site, v, format!("{path}.{key}[{i}]"), true));
                }
            }
        }
        if let Some(v) = m.get("not") {
            s.not = Some(Box::new(child(site, v, format!("{path}.not"), true)));
        }
        s
    }

    /// Checks the defaults the schema declares: each must be valid against its own node
    /// (Kubernetes refuses a definition whose defaults its objects would fail).
    pub fn check_defaults(&self, path: &str, errors: &mut Vec<Cause>) {
        if let Some(d) = &self.default {
            let mut d = d.clone();
            self.prune_at(&mut d, &Loc::Key(&Loc::Root, "default"), &mut Vec::new());
            let mut causes = Vec::new();
            self.validate(&d, &mut causes);
            if !causes.is_empty() {
                errors.push(Cause::invalid(
                    format!("{path}.default"),
                    compact(&d),
                    &causes
                        .iter()
                        .map(|c| c.message.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        }
        for (k, p) in &self.properties {
            p.check_defaults(&format!("{path}.properties[{k}]"), errors);
        }
        if let Additional::Schema(a) = &self.additional {
            a.check_defaults(&format!("{path}.additionalProperties"), errors);
        }
        if let Some(i) = &self.items {
            i.check_defaults(&format!("{path}.items"), errors);
        }
    }

    /// The node for the property `name` of an object, if declared.
    pub fn property(&self, name: &str) -> Option<&Schema> {
        self.properties.get(name).or(match &self.additional {
            Additional::Schema(s) => Some(s),
            _ => None,
        })
    }

    /// The node for the elements of an array.
    pub fn items(&self) -> Option<&Schema> {
        self.items.as_deref()
    }

    /// Removes the fields the schema does not declare, recording their paths in `pruned`. At
    /// the root (and in embedded resources) `apiVersion`, `kind` and `metadata` stay.
    pub fn prune(&self, v: &mut Value, pruned: &mut Vec<String>) {
        self.prune_at(v, &Loc::Root, pruned);
    }

    fn prune_at(&self, v: &mut Value, loc: &Loc<'_>, pruned: &mut Vec<String>) {
        let root = matches!(loc, Loc::Root);
        match v {
            Value::Object(m) => {
                let keeps_meta = root || self.embedded;
                let drops = matches!(self.additional, Additional::Unset) && !self.preserve_unknown;
                if drops {
                    m.retain(|k, _| {
                        let keep = self.properties.contains_key(k)
                            || (keeps_meta
                                && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"));
                        if !keep {
                            pruned.push(Loc::Key(loc, k).render());
                        }
                        keep
                    });
                }
                for (k, child) in m.iter_mut() {
                    let at = Loc::Key(loc, k);
                    if keeps_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        if k == "metadata"
                            && !root
                            && let Some(meta) = child.as_object_mut()
                        {
                            prune_embedded_meta(meta, &at, pruned);
                        }
                        continue;
                    }
                    let schema = match (self.properties.get(k), &self.additional) {
                        (Some(s), _) => Some(s),
                        (None, Additional::Schema(s)) => Some(&**s),
                        _ => None,
                    };
                    if let Some(s) = schema {
                        s.prune_at(child, &at, pruned);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for (i, item) in items.iter_mut().enumerate() {
                        s.prune_at(item, &Loc::Index(loc, i), pruned);
                    }
                }
            }
            _ => {}
        }
    }

    /// Fills in declared defaults of missing (or null, where null is not allowed) fields.
    pub fn apply_defaults(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, s) in &self.properties {
                    if let Some(d) = &s.default {
                        let missing = match m.get(k) {
                            None => true,
                            Some(Value::Null) => !s.nullable,
                            Some(_) => false,
                        };
                        if missing {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = m.get_mut(k) {
                        s.apply_defaults(child);
                    }
                }
                if let Additional::Schema(s) = &self.additional {
                    for child in m.values_mut() {
                        s.apply_defaults(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = &self.items {
                    for item in items {
                        s.apply_defaults(item);
                    }
                }
            }
            _ => {}
        }
    }

    /// Field errors of `v`, an object of this schema's root.
    pub fn validate(&self, v: &Value, out: &mut Vec<Cause>) {
        self.validate_at(v, &Loc::Root, out);
    }

    /// Field errors of `v` at `loc` (rendered only for an error).
    fn validate_at(&self, v: &Value, loc: &Loc<'_>, out: &mut Vec<Cause>) {
        let path = P(loc, "");
        let shown = P(loc, "<root>");
        if v.is_null() {
            if !self.nullable && (self.ty.is_some() || self.int_or_string) {
                let want = self.ty.map_or("integer or string", Ty::name);
                out.push(Cause::invalid(
                    path,
                    "null",
                    &format!("{shown} in body must be of type {want}: \"null\""),
                ));
            }
            return;
        }
        if !self.type_matches(v) {
            let want = self.ty.map_or("integer or string", Ty::name);
            let got = type_name(v);
            out.push(Cause::invalid(
                path,
                got,
                &format!("{shown} in body must be of type {want}: \"{got}\""),
            ));
            return;
        }
        if !self.enumeration.is_empty() && !self.enumeration.contains(v) {
            let supported: Vec<String> = self.enumeration.iter().map(compact).collect();
            let refs: Vec<&str> = supported.iter().map(|s| s.trim_matches('"')).collect();
            out.push(Cause::not_supported(path, display(v), &refs));
        }
        match v {
            Value::String(s) => self.validate_string(s, path, shown, out),
            Value::Number(n) => self.validate_number(n, path, shown, out),
            Value::Array(items) => self.validate_array(items, path, shown, out),
            Value::Object(m) => self.validate_object(m, path, shown, out),
            _ => {}
        }
        self.validate_combinators(v, path, shown, out);
    }

    fn type_matches(&self, v: &Value) -> bool {
        if self.int_or_string {
            return v.is_string() || is_integer(v);
        }
        match self.ty {
            None => true,
            Some(Ty::Object) => v.is_object(),
            Some(Ty::Array) => v.is_array(),
            Some(Ty::String) => v.is_string(),
            Some(Ty::Integer) => is_integer(v),
            Some(Ty::Number) => v.is_number(),
            Some(Ty::Boolean) => v.is_boolean(),
        }
    }

    fn validate_string(&self, s: &str, path: P<'_>, shown: P<'_>, out: &mut Vec<Cause>) {
        let len = s.chars().count() as u64;
        if let Some(max) = self.max_length
            && len > max
        {
            out.push(Cause {
                reason: "FieldValueTooLong".into(),
                message: format!("Too long: may not be more than {max} bytes"),
                field: path.into(),
            });
        }
        if let Some(min) = self.min_length
            && len < min
        {
            out.push(Cause::invalid(
                path,
                s,
                &format!("{shown} in body should be at least {min} chars long"),
            ));
        }
        if let Some((p, re)) = &self.pattern
            && !re.is_match(s)
        {
            out.push(Cause::invalid(
                path,
                s,
                &format!("{shown} in body should match '{p}'"),
            ));
        }
        if let Some(f) = &self.format
            && self.ty == Some(Ty::String)
            && !format_ok(f, s)
        {
            out.push(Cause::invalid(
                path,
                s,
                &format!("{shown} in body must be of type {f}: \"{s}\""),
            ));
        }
    }

    fn validate_number(
        &self,
        n: &serde_json::Number,
        path: P<'_>,
        shown: P<'_>,
        out: &mut Vec<Cause>,
    ) {
        let x = n.as_f64().unwrap_or(0.0);
        if let Some(max) = self.maximum {
            if self.exclusive_maximum && x >= max {
                out.push(Cause::invalid(
                    path,
                    n,
                    &format!("{shown} in body should be less than {}", fmt_num(max)),
                ));
            } else if x > max {
                out.push(Cause::invalid(
                    path,
                    n,
                    &format!(
                        "{shown} in body should be less than or equal to {}",
                        fmt_num(max)
                    ),
                ));
            }
        }
        if let Some(min) = self.minimum {
            if self.exclusive_minimum && x <= min {
                out.push(Cause::invalid(
                    path,
                    n,
                    &format!("{shown} in body should be greater than {}", fmt_num(min)),
                ));
            } else if x < min {
                out.push(Cause::invalid(
                    path,
                    n,
                    &format!(
                        "{shown} in body should be greater than or equal to {}",
                        fmt_num(min)
                    ),
                ));
            }
        }
        if let Some(m) = self.multiple_of
            && m != 0.0
            && (x / m).fract().abs() > f64::EPSILON
        {
            out.push(Cause::invalid(
                path,
                n,
                &format!("{shown} in body should be a multiple of {}", fmt_num(m)),
            ));
        }
        if self.format.as_deref() == Some("int32")
            && n.as_i64().is_some_and(|i| i32::try_from(i).is_err())
        {
            out.push(Cause::invalid(
                path,
                n,
                &format!("{shown} in body must be of type int32: \"{n}\""),
            ));
        }
    }

    fn validate_array(&self, items: &[Value], path: P<'_>, shown: P<'_>, out: &mut Vec<Cause>) {
        let bounds = (self.max_items, self.min_items);
        count_bounds(items.len(), bounds, (path, shown), "items", out);
        if self.unique_items || self.list_type.as_deref() == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(Cause::duplicate(
                        Loc::Index(path.0, i).render(),
                        display(item),
                    ));
                }
            }
        }
        if self.list_type.as_deref() == Some("map") {
            let keys: Vec<Vec<Value>> = items
                .iter()
                .map(|item| {
                    self.list_map_keys
                        .iter()
                        .map(|k| item.get(k).cloned().unwrap_or(Value::Null))
                        .collect()
                })
                .collect();
            for (i, k) in keys.iter().enumerate() {
                if keys[..i].contains(k) {
                    let shown_key: Vec<String> = self
                        .list_map_keys
                        .iter()
                        .zip(k)
                        .map(|(name, v)| format!("\"{name}\":{}", compact(v)))
                        .collect();
                    // As Go prints the key (`%#v` of a map[string]interface{}).
                    out.push(Cause {
                        reason: "FieldValueDuplicate".into(),
                        message: format!(
                            "Duplicate value: map[string]interface {{}}{{{}}}",
                            shown_key.join(", ")
                        ),
                        field: Loc::Index(path.0, i).render(),
                    });
                }
            }
        }
        if let Some(s) = &self.items {
            for (i, item) in items.iter().enumerate() {
                s.validate_at(item, &Loc::Index(path.0, i), out);
            }
        }
    }

    fn validate_object(
        &self,
        m: &Map<String, Value>,
        path: P<'_>,
        shown: P<'_>,
        out: &mut Vec<Cause>,
    ) {
        for r in &self.required {
            if !m.contains_key(r) {
                out.push(Cause::required(Loc::Key(path.0, r).render()));
            }
        }
        let bounds = (self.max_properties, self.min_properties);
        count_bounds(m.len(), bounds, (path, shown), "properties", out);
        let root = matches!(path.0, Loc::Root);
        // Declared fields in name order, then the others (checked by additionalProperties).
        for (k, s) in &self.properties {
            if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(v) = m.get(k) {
                s.validate_at(v, &Loc::Key(path.0, k), out);
            }
        }
        if let Additional::Schema(s) = &self.additional {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                s.validate_at(&m[k], &Loc::Key(path.0, k), out);
            }
        }
        if self.embedded {
            for k in ["apiVersion", "kind"] {
                if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    out.push(Cause::required(Loc::Key(path.0, k).render()));
                }
            }
        }
    }

    fn validate_combinators(&self, v: &Value, path: P<'_>, shown: P<'_>, out: &mut Vec<Cause>) {
        for s in &self.all_of {
            s.validate_at(v, path.0, out);
        }
        let passes = |s: &Schema| {
            let mut c = Vec::new();
            s.validate_at(v, path.0, &mut c);
            c.is_empty()
        };
        if !self.any_of.is_empty() && !self.any_of.iter().any(passes) {
            out.push(Cause::invalid(
                path,
                display(v),
                &format!("{shown} in body must match at least one schema in anyOf"),
            ));
        }
        if !self.one_of.is_empty() {
            let n = self.one_of.iter().filter(|s| passes(s)).count();
            if n != 1 {
                out.push(Cause::invalid(
                    path,
                    display(v),
                    &format!("{shown} in body must match exactly one schema in oneOf"),
                ));
            }
        }
        if let Some(not) = &self.not
            && passes(not)
        {
            out.push(Cause::invalid(
                path,
                display(v),
                &format!("{shown} in body should not be valid against the schema in not"),
            ));
        }
    }
}

/// `maxItems`/`minItems` (or `maxProperties`/`minProperties`) of something with `len`
/// elements, counted in `unit` (`items`, `properties`).
fn count_bounds(
    len: usize,
    (max, min): (Option<u64>, Option<u64>),
    (path, shown): (P<'_>, P<'_>),
    unit: &str,
    out: &mut Vec<Cause>,
) {
    let len = len as u64;
    if let Some(max) = max
        && len > max
    {
        out.push(Cause {
            reason: "FieldValueTooMany".into(),
            message: format!("Too many: {len}: must have at most {max} items"),
            field: path.into(),
        });
    }
    if let Some(min) = min
        && len < min
    {
        out.push(Cause::invalid(
            path,
            len,
            &format!("{shown} in body should have at least {min} {unit}"),
        ));
    }
}

/// Where a value sits, as a chain on the stack: rendered (`spec.ports[1].name`) only when an
/// error or a pruned field needs it.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Root,
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

impl Loc<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
    fn write(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Loc::Root => {}
            Loc::Key(parent, k) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Loc::Index(parent, i) => {
                parent.write(out);
                let _ = write!(out, "[{i}]");
            }
        }
    }
}

/// A location shown in a message: its path, or the given text at the root (`<root>`).
#[derive(Clone, Copy)]
struct P<'a>(&'a Loc<'a>, &'static str);

impl std::fmt::Display for P<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Loc::Root => f.write_str(self.1),
            loc => f.write_str(&loc.render()),
        }
    }
}

impl From<P<'_>> for String {
    fn from(p: P<'_>) -> String {
        p.to_string()
    }
}

/// `metadata` of an embedded resource keeps only ObjectMeta's fields.
fn prune_embedded_meta(meta: &mut Map<String, Value>, loc: &Loc<'_>, pruned: &mut Vec<String>) {
    const META: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    ];
    meta.retain(|k, _| {
        let keep = META.contains(&k.as_str());
        if !keep {
            pruned.push(Loc::Key(loc, k).render());
        }
        keep
    });
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as an error shows it: strings bare (the cause quotes them), others as JSON.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => compact(other),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// The string formats Kubernetes checks; others are accepted as they are.
fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine;
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "int-or-string" => true,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(v: Value) -> Schema {
        let mut errors = Vec::new();
        let s = Schema::compile(&v, "schema", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        s
    }

    fn messages(s: &Schema, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        s.validate(v, &mut out);
        out.iter().map(Cause::to_line).collect()
    }

    fn widget() -> Schema {
        compile(json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "string", "enum": ["small", "large"]},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "port": {"x-kubernetes-int-or-string": true},
                "when": {"type": "string", "format": "date-time"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }}))
    }

    #[test]
    fn errors_read_as_kube_apiextensions_writes_them() {
        let s = widget();
        let bad = json!({"spec": {"size": "huge", "replicas": 11, "name": "ABCDEFG", "port": true,
            "when": "yesterday", "labels": {"a": 1}}});
        assert_eq!(
            messages(&s, &bad),
            [
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
                "spec.size: Unsupported value: \"huge\": supported values: \"small\", \"large\"",
                "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            ]
        );
        assert_eq!(
            messages(&s, &json!({"spec": {}})),
            ["spec.size: Required value"]
        );
        let dup = json!({"spec": {"size": "small", "ports": [{"name": "a"}, {"name": "a"}]}});
        assert_eq!(
            messages(&s, &dup),
            [r#"spec.ports[1]: Duplicate value: map[string]interface {}{"name":"a"}"#]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved_and_defaults_fill_in() {
        let s = widget();
        let mut o = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w"}, "junk": 1,
            "spec": {"size": "small", "bogus": true, "extra": {"anything": [1]}, "ports": [{"name": "p", "x": 1}]}});
        let mut pruned = Vec::new();
        s.prune(&mut o, &mut pruned);
        assert_eq!(pruned, ["junk", "spec.bogus", "spec.ports[0].x"]);
        s.apply_defaults(&mut o);
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["spec"]["ports"][0]["port"], 80);
        assert_eq!(o["spec"]["extra"]["anything"], json!([1]));
        assert!(messages(&s, &o).is_empty());
    }

    #[test]
    fn non_structural_schemas_are_refused() {
        let mut errors = Vec::new();
        Schema::compile(
            &json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}},
                "list": {"type": "array"}, "bad": {"type": "string", "pattern": "("}}}),
            "s",
            &mut errors,
        );
        let fields: Vec<&str> = errors.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.properties[spec].type",
                "s.properties[list].items",
                "s.properties[bad].pattern"
            ]
        );
        // Value validation may leave types out.
        compile(
            json!({"type": "object", "properties": {"v": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]}}}),
        );
    }

    #[test]
    fn combinators_and_embedded_resources() {
        let s = compile(json!({"type": "object", "properties": {
            "v": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]},
            "tmpl": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
        }}));
        assert!(messages(&s, &json!({"v": "apple"})).is_empty());
        assert_eq!(
            messages(&s, &json!({"v": "cherry"})),
            ["v: Invalid value: \"cherry\": v in body must match at least one schema in anyOf"]
        );
        assert_eq!(
            messages(&s, &json!({"tmpl": {"kind": "Pod"}})),
            ["tmpl.apiVersion: Required value"]
        );
        let mut o = json!({"tmpl": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "bogus": 1}, "spec": {}}});
        let mut pruned = Vec::new();
        s.prune(&mut o, &mut pruned);
        assert_eq!(pruned, ["tmpl.metadata.bogus"]);
    }
}
