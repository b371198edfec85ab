//! Durations in configuration files as text such as `30s` or `500ms`, with errors that show a
//! valid value. Use it as `#[serde(with = "crate::duration_text")]` on a `Duration` field, and
//! `crate::duration_text::option` on an `Option<Duration>` field.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Parses `text` as a duration, or returns an error that names it and shows valid values.
fn parse(text: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?}: {error}; write a number and a unit, such as 500ms, 30s or 2m")
    })
}

/// Writes `duration` as text, such as `1m 30s`.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(duration, serializer)
}

/// Reads a duration written as text.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(D::Error::custom)
}

/// The same for an optional duration, which is absent or text.
pub mod option {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `duration` as text, or as none.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(duration, serializer)
    }

    /// Reads an optional duration written as text.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse(&text).map(Some).map_err(D::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize, Serialize)]
    struct Settings {
        #[serde(with = "crate::duration_text")]
        interval: Duration,
    }

    #[test]
    fn text_round_trips() {
        let settings: Settings = toml::from_str(r#"interval = "1m 30s""#).expect("valid");
        assert_eq!(settings.interval, Duration::from_secs(90));
        let text = toml::to_string(&settings).expect("encodes");
        assert_eq!(text.trim(), r#"interval = "1m 30s""#);
    }

    #[test]
    fn negative_value_shows_example() {
        let error = toml::from_str::<Settings>(r#"interval = "-5s""#).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(r#"invalid duration "-5s""#), "{message}");
        assert!(message.contains("such as 500ms, 30s or 2m"), "{message}");
    }
}
