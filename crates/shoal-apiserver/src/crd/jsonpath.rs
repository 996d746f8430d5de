//! The JSONPath subset CustomResourceDefinitions use in `additionalPrinterColumns` and scale
//! paths: `.spec.replicas`, `.items[0]`, `.items[*].name`, `['a.b/c']` and filters such as
//! `.status.conditions[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.path OP "value")]`
    Filter {
        path: Vec<String>,
        equal: bool,
        value: Value,
    },
}

/// A compiled path.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses `path` (with or without `{}` around it); the error says what is wrong.
    pub fn parse(path: &str) -> Result<Self, String> {
        let p = path.trim();
        let p = p
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(p);
        let p = p.strip_prefix('$').unwrap_or(p);
        let b = p.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                        j += 1;
                    }
                    if j == start {
                        return Err(format!("empty field name at {start} in {path}"));
                    }
                    steps.push(Step::Field(p[start..j].to_owned()));
                    i = j;
                }
                b'[' => {
                    let end = closing(p, i).ok_or_else(|| format!("unclosed [ in {path}"))?;
                    let inner = p[i + 1..end].trim();
                    steps.push(bracket(inner).map_err(|e| format!("{e} in {path}"))?);
                    i = end + 1;
                }
                _ => return Err(format!("unexpected {:?} at {i} in {path}", b[i] as char)),
            }
        }
        if steps.is_empty() {
            return Err(format!("{path} selects nothing"));
        }
        Ok(JsonPath(steps))
    }

    /// The values the path selects in `v`.
    pub fn select<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match step {
                    Step::Field(f) => next.extend(v.get(f)),
                    Step::Index(n) => next.extend(v.get(*n)),
                    Step::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Step::Filter { path, equal, value } => {
                        if let Value::Array(a) = v {
                            next.extend(a.iter().filter(|item| {
                                let got = path.iter().try_fold(*item, |x, k| x.get(k));
                                (got == Some(value)) == *equal
                            }));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }

    /// The fields of a plain dotted path (`.spec.replicas` → `["spec", "replicas"]`), for
    /// writing through it.
    pub fn fields(&self) -> Option<Vec<&str>> {
        self.0
            .iter()
            .map(|s| match s {
                Step::Field(f) => Some(f.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The `]` closing the `[` at `open`, skipping quoted strings.
fn closing(p: &str, open: usize) -> Option<usize> {
    let mut quote = None;
    for (i, c) in p[open..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Some(open + i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
}

fn bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Ok(Step::Index(n));
    }
    if let Some(f) = unquote(inner) {
        return Ok(Step::Field(f.replace("\\.", ".")));
    }
    let filter = inner
        .strip_prefix("?(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported selector [{inner}]"))?;
    let (lhs, rhs, equal) = if let Some((l, r)) = filter.split_once("==") {
        (l, r, true)
    } else if let Some((l, r)) = filter.split_once("!=") {
        (l, r, false)
    } else {
        return Err(format!("unsupported filter [{inner}]"));
    };
    let path: Vec<String> = lhs
        .trim()
        .strip_prefix("@.")
        .ok_or_else(|| format!("a filter starts with @. in [{inner}]"))?
        .split('.')
        .map(str::to_owned)
        .collect();
    let rhs = rhs.trim();
    let value = match unquote(rhs) {
        Some(s) => Value::String(s.to_owned()),
        None => serde_json::from_str(rhs).map_err(|_| format!("bad filter value {rhs}"))?,
    };
    Ok(Step::Filter { path, equal, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_fields_indices_and_filters() {
        let o = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}]},
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        let get = |p: &str| -> Vec<Value> {
            JsonPath::parse(p)
                .unwrap()
                .select(&o)
                .into_iter()
                .cloned()
                .collect()
        };
        assert_eq!(get(".spec.replicas"), [json!(3)]);
        assert_eq!(get("{.spec.items[1].name}"), [json!("b")]);
        assert_eq!(get(".spec.items[*].name"), [json!("a"), json!("b")]);
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            [json!("True")]
        );
        assert_eq!(
            get(".metadata.labels['app.kubernetes.io/name']"),
            [json!("x")]
        );
        assert!(get(".spec.missing").is_empty());
        assert!(JsonPath::parse(".spec[").is_err());
        assert_eq!(
            JsonPath::parse(".spec.replicas").unwrap().fields(),
            Some(vec!["spec", "replicas"])
        );
    }
}
