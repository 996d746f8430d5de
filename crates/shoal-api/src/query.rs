//! Query parameters read the way kube-apiserver reads them.

/// A boolean query parameter, by Kubernetes' one rule for all of them: `0` and `false` (in any
/// case) are false, anything else, the empty string included, is true; absent is false. So
/// Python's `True`/`False` mean what they say.
pub fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod tests {
    use super::flag;

    #[test]
    fn zero_and_false_in_any_case_are_false_everything_else_true() {
        for v in ["0", "false", "False", "FALSE", "fAlSe"] {
            assert!(!flag(Some(v)), "{v}");
        }
        for v in ["", "1", "true", "True", "TRUE", "yes", "t", "2"] {
            assert!(flag(Some(v)), "{v}");
        }
        assert!(!flag(None));
    }
}
