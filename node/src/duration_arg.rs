//! Parsing of duration flags such as `--duration 30s`, with errors that show a valid value.

/// Parses a positive duration flag value, such as `500ms`, `30s` or `2m`.
pub fn parse_positive(value: &str) -> Result<humantime::Duration, String> {
    let duration: humantime::Duration = value
        .parse()
        .map_err(|error| format!("{error}; write a number and a unit, such as 500ms, 30s or 2m"))?;
    if duration.is_zero() {
        return Err("the duration must be longer than 0, such as 500ms, 30s or 2m".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(
            *parse_positive("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(*parse_positive("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn invalid_value_shows_example() {
        let error = parse_positive("banana").unwrap_err();
        assert!(error.contains("such as 500ms, 30s or 2m"), "{error}");
    }

    #[test]
    fn zero_is_rejected() {
        let error = parse_positive("0s").unwrap_err();
        assert!(error.contains("longer than 0"), "{error}");
    }
}
