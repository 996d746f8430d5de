//! Label selectors (equality and set-based) and field selectors, as the API server parses them
//! from `labelSelector` and `fieldSelector` query parameters.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid selector: '{0}'; can't understand '{1}'")]
    Field(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: LabelOp,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            LabelOp::Eq(x) => v == Some(x),
            LabelOp::NotEq(x) => v != Some(x),
            LabelOp::In(xs) => set_matches("In", xs, v) == Some(true),
            LabelOp::NotIn(xs) => set_matches("NotIn", xs, v) == Some(true),
            LabelOp::Exists => set_matches("Exists", &[], v) == Some(true),
            LabelOp::NotExists => set_matches("DoesNotExist", &[], v) == Some(true),
            LabelOp::Gt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelOp::Lt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253)
        && crate::resources::is_qualified_name_part(name)
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty() || crate::resources::is_qualified_name_part(v)
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top(s)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            requirements.push(Self::parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    fn parse_requirement(p: &str) -> Result<Requirement, SelectorError> {
        let err = || SelectorError::Label(p.to_owned());
        let check_key = |k: &str| {
            if valid_label_key(k) {
                Ok(k.to_owned())
            } else {
                Err(err())
            }
        };
        let check_val = |v: &str| {
            if valid_label_value(v) {
                Ok(v.to_owned())
            } else {
                Err(err())
            }
        };
        if let Some(k) = p.strip_prefix('!') {
            return Ok(Requirement {
                key: check_key(k.trim())?,
                op: LabelOp::NotExists,
            });
        }
        for (tok, is_in) in [(" notin ", false), (" in ", true)] {
            if let Some(i) = p.find(tok) {
                let key = check_key(p[..i].trim())?;
                let rest = p[i + tok.len()..].trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(err)?;
                let vals = inner
                    .split(',')
                    .map(|v| check_val(v.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                let op = if is_in {
                    LabelOp::In(vals)
                } else {
                    LabelOp::NotIn(vals)
                };
                return Ok(Requirement { key, op });
            }
        }
        for (tok, kind) in [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
            if let Some(i) = p.find(tok) {
                let key = check_key(p[..i].trim())?;
                let val = p[i + tok.len()..].trim();
                let op = match kind {
                    0 => LabelOp::NotEq(check_val(val)?),
                    1 => LabelOp::Eq(check_val(val)?),
                    2 => LabelOp::Gt(val.parse().map_err(|_| err())?),
                    _ => LabelOp::Lt(val.parse().map_err(|_| err())?),
                };
                return Ok(Requirement { key, op });
            }
        }
        Ok(Requirement {
            key: check_key(p)?,
            op: LabelOp::Exists,
        })
    }

    /// From a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(sel: &serde_json::Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(|m| m.as_object()) {
            for (k, v) in m {
                requirements.push(Requirement {
                    key: k.clone(),
                    op: LabelOp::Eq(v.as_str().unwrap_or_default().to_owned()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(|m| m.as_array()) {
            for e in exprs {
                let str_of = |f: &str| e.get(f).and_then(|k| k.as_str()).unwrap_or_default();
                let values = e
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                requirements.push(expression(str_of("key"), str_of("operator"), values)?);
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches the `metadata.labels` of a JSON object.
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = &self.key;
        match &self.op {
            LabelOp::Eq(v) => write!(f, "{k}={v}"),
            LabelOp::NotEq(v) => write!(f, "{k}!={v}"),
            LabelOp::In(vs) => write!(f, "{k} in ({})", vs.join(",")),
            LabelOp::NotIn(vs) => write!(f, "{k} notin ({})", vs.join(",")),
            LabelOp::Exists => write!(f, "{k}"),
            LabelOp::NotExists => write!(f, "!{k}"),
            LabelOp::Gt(n) => write!(f, "{k}>{n}"),
            LabelOp::Lt(n) => write!(f, "{k}<{n}"),
        }
    }
}

/// The selector in query-parameter syntax (`app=web,tier in (a,b)`).
impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// One `matchExpressions` entry as a requirement.
fn expression(
    key: &str,
    operator: &str,
    values: Vec<String>,
) -> Result<Requirement, SelectorError> {
    let op = match operator {
        "In" => LabelOp::In(values),
        "NotIn" => LabelOp::NotIn(values),
        "Exists" => LabelOp::Exists,
        "DoesNotExist" => LabelOp::NotExists,
        other => return Err(SelectorError::Label(format!("{key} {other}"))),
    };
    Ok(Requirement {
        key: key.to_owned(),
        op,
    })
}

impl TryFrom<&metav1::LabelSelector> for LabelSelector {
    type Error = SelectorError;

    fn try_from(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: LabelOp::Eq(v.clone()),
            })
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            requirements.push(expression(&e.key, &e.operator, values)?);
        }
        Ok(LabelSelector { requirements })
    }
}

/// What typed `metav1.LabelSelector`s (in workload specs, affinity terms, spread constraints)
/// are asked; every component interprets them through [`LabelSelector`].
pub trait LabelSelectorExt {
    /// Whether the selector selects `labels` (an unknown operator selects nothing).
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool;

    /// The selector in query syntax (`a=b,c in (d,e),!f`), for a `labelSelector` parameter.
    fn to_query(&self) -> Result<String, SelectorError>;
}

/// Whether a label with value `v` (`None`: absent) satisfies a set-based requirement with
/// `operator` (`In`, `NotIn`, `Exists`, `DoesNotExist`); `None` for an unknown operator.
fn set_matches(operator: &str, values: &[String], v: Option<&String>) -> Option<bool> {
    Some(match operator {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        _ => return None,
    })
}

impl LabelSelectorExt for metav1::LabelSelector {
    /// Evaluated in place (the scheduler asks this per pod per node), with the semantics of
    /// [`LabelSelector::matches`].
    fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.match_labels
            .iter()
            .flatten()
            .all(|(k, v)| get(k) == Some(v))
            && self.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or(&[]);
                set_matches(&e.operator, values, get(&e.key)) == Some(true)
            })
    }

    fn to_query(&self) -> Result<String, SelectorError> {
        LabelSelector::try_from(self).map(|s| s.to_string())
    }
}

/// `metadata.labels` of a JSON object as a map.
/// A plain label map (`{"app": "web"}`) as a selector string, keys sorted: `app=web`.
pub fn map_to_string(m: Option<&serde_json::Value>) -> String {
    let mut pairs: Vec<String> = m
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs.join(",")
}

pub fn labels_of(obj: &serde_json::Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negate: bool,
}

/// A parsed field selector: all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError::Field(s.to_owned(), term.to_owned()));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
                negate,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value a term on `field` requires, if it is an equality (used to narrow lookups).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negate)
            .map(|r| r.value.as_str())
    }

    /// Matches given a function reading a field's value (empty string if absent).
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (get(&r.field) == r.value) != r.negate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn typed_selectors_match_and_print_like_query_selectors() {
        let sel: metav1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}))
        .unwrap();
        assert_eq!(sel.to_query().unwrap(), "app=web,tier in (a,b),!canary");
        assert!(sel.selects(Some(&labels(&[("app", "web"), ("tier", "b")]))));
        assert!(!sel.selects(Some(&labels(&[("app", "web"), ("tier", "c")]))));
        assert!(!sel.selects(None));
        assert!(metav1::LabelSelector::default().selects(None));
        let bad: metav1::LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "x", "operator": "Near"}]}))
        .unwrap();
        assert!(!bad.selects(Some(&labels(&[("x", "1")]))));
        assert!(bad.to_query().is_err());
    }

    #[test]
    fn parses_equality_and_set_based_requirements() {
        let s = LabelSelector::parse("app in (db,x),tier!=front,env,!canary,v==2").unwrap();
        assert_eq!(s.requirements.len(), 5);
        assert!(s.matches(&labels(&[
            ("app", "db"),
            ("tier", "back"),
            ("env", "p"),
            ("v", "2")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "db"),
            ("tier", "front"),
            ("env", "p"),
            ("v", "2")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "db"),
            ("env", "p"),
            ("canary", "1"),
            ("v", "2")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "p"), ("v", "2")])));
    }

    #[test]
    fn notin_matches_absent_keys() {
        let s = LabelSelector::parse("app notin (a,b)").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("app", "a")])));
    }

    #[test]
    fn rejects_malformed_requirements() {
        assert!(LabelSelector::parse("app in db").is_err());
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selector_equality_and_inequality() {
        let f = FieldSelector::parse("metadata.name=web,status.phase!=Failed").unwrap();
        assert!(f.matches(|k| if k == "metadata.name" {
            "web".into()
        } else {
            "Running".into()
        }));
        assert!(!f.matches(|k| if k == "metadata.name" {
            "web".into()
        } else {
            "Failed".into()
        }));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
