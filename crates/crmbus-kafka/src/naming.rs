//! Names: the Kafka topic of a crmbus topic, and the state-store namespaces the log keeps
//! beside it (see the crate docs' table).

use crmbus::LogError;

/// The longest prefix: with a 200-character topic name and the separator it keeps Kafka
/// topic names within Kafka's 249.
pub const MAX_PREFIX: usize = 48;

/// Checks a namespace prefix: 1–48 characters of `A–Z a–z 0–9 _ -` (no `.`, so the first
/// `.` of a Kafka topic name ends the prefix).
pub fn check_prefix(prefix: &str) -> Result<(), LogError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidArgument(format!(
            "Kafka namespace prefix '{prefix}' must be 1-{MAX_PREFIX} characters of A-Z a-z 0-9 _ -"
        )))
    }
}

/// The Kafka topic holding crmbus topic `topic`: `<prefix>.<topic>`.
pub fn kafka_topic(prefix: &str, topic: &str) -> String {
    format!("{prefix}.{topic}")
}

/// The crmbus topic a Kafka topic of this namespace holds, if it is one.
pub fn crmbus_topic<'a>(prefix: &str, kafka_topic: &'a str) -> Option<&'a str> {
    kafka_topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|t| !t.is_empty())
}

/// The state namespace of topic records (key: the topic name).
pub const TOPICS_NS: &str = "kafka/topics";

/// The state namespace of a topic's group offsets (key: [`offset_key`]).
pub fn offsets_ns(topic: &str) -> String {
    format!("kafka/offsets/{topic}")
}

/// The key of a group's offset for one partition: `<partition>/<group>` (the partition has
/// no `/`, so any group name fits).
pub fn offset_key(group: &str, partition: u32) -> String {
    format!("{partition}/{group}")
}

/// The Kafka consumer group a [`crate::KafkaGroupConsumer`] of group `group` joins:
/// `<prefix>.<group>`.
pub fn kafka_group(prefix: &str, group: &str) -> String {
    format!("{prefix}.{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_round_trip_and_other_namespaces_are_not_ours() {
        let k = kafka_topic("crmbus", "deals.won");
        assert_eq!(k, "crmbus.deals.won");
        assert_eq!(crmbus_topic("crmbus", &k), Some("deals.won"));
        assert_eq!(crmbus_topic("crm", &k), None);
        assert_eq!(crmbus_topic("crmbus", "crmbus2.deals"), None);
        assert_eq!(crmbus_topic("crmbus", "crmbus."), None);
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("crmbus").is_ok());
        assert!(check_prefix("t-run_1").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a.b").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX + 1)).is_err());
    }
}
