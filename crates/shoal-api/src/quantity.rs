//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`, `2e3`), as numbers.

/// A quantity that does not parse, with the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct QuantityError(pub String);

/// The value of a quantity in base units (bytes, cores).
pub fn parse(q: &str) -> Result<f64, QuantityError> {
    let bad = || QuantityError(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num == "+" || num == "-" {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() {
        return Err(bad());
    }
    Ok(v)
}

/// A memory-like quantity in whole bytes (rounded up).
pub fn bytes(q: &str) -> Result<u64, QuantityError> {
    parse(q).map(|v| v.max(0.0).ceil() as u64)
}

/// A CPU quantity in millicores (rounded up).
pub fn millis(q: &str) -> Result<u64, QuantityError> {
    parse(q).map(|v| (v.max(0.0) * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(bytes("128Mi").unwrap(), 128 << 20);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("1.5Ki").unwrap(), 1536);
        assert_eq!(millis("500m").unwrap(), 500);
        assert_eq!(millis("2").unwrap(), 2000);
        assert_eq!(millis("0.1").unwrap(), 100);
        assert_eq!(bytes("2e3").unwrap(), 2000);
        for bad in ["", "Mi", "12x", "1.2.3", "--1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
